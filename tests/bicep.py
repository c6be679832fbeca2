"""A small Bicep reader for tests: enough of the language to hold
``infra/`` to the code without a Bicep compiler.

It tokenizes (comments, strings with ``${...}`` interpolation, multi-line
strings, operators) and parses declarations (``param``, ``var``,
``resource`` with nested resources, ``module``, ``output``, decorators)
and expressions (objects, arrays, ``for`` and ``if`` bodies, calls,
member access, ternaries, binary and unary operators) into plain nodes.
It does not type-check or evaluate; the tests resolve what they need.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class BicepSyntaxError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, op, newline, eof
    value: Any
    line: int


@dataclass
class Str:
    parts: list[Any]  # str pieces and expression nodes, in order

    @property
    def literal(self) -> str | None:
        """The text when there is no interpolation."""
        return "".join(self.parts) if all(isinstance(p, str) for p in self.parts) else None


@dataclass
class Ident:
    name: str


@dataclass
class Obj:
    entries: dict[str, Any]
    resources: list[Resource] = field(default_factory=list)


@dataclass
class Arr:
    items: list[Any]


@dataclass
class For:
    variable: Any
    source: Any
    body: Any


@dataclass
class If:
    condition: Any
    body: Any


@dataclass
class Call:
    callee: Any
    args: list[Any]


@dataclass
class Member:
    target: Any
    name: str


@dataclass
class Index:
    target: Any
    index: Any


@dataclass
class Op:
    op: str
    operands: list[Any]


@dataclass
class Resource:
    symbol: str
    type: str
    existing: bool
    body: Any


@dataclass
class Declaration:
    kind: str  # param, var, resource, module, output, targetScope, metadata, import, type, func
    name: str
    type: Any = None
    value: Any = None
    decorators: list[Any] = field(default_factory=list)


_OPS = sorted(
    ["??", ".?", "::", "==", "!=", "=~", "!~", "<=", ">=", "&&", "||", "=>", *"{}[]():,.?!=<>+-*/%@|&"],
    key=len,
    reverse=True,
)
_IDENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_NUMBER = re.compile(r"\d+(\.\d+)?")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            tokens.append(Token("newline", "\n", line))
            line += 1
            i += 1
        elif c in " \t\r":
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            if end < 0:
                raise BicepSyntaxError(f"line {line}: unterminated comment")
            line += text.count("\n", i, end)
            i = end + 2
        elif text.startswith("'''", i):
            end = text.find("'''", i + 3)
            if end < 0:
                raise BicepSyntaxError(f"line {line}: unterminated multi-line string")
            tokens.append(Token("string", Str([text[i + 3 : end]]), line))
            line += text.count("\n", i, end)
            i = end + 3
        elif c == "'":
            node, i = _string(text, i + 1, line)
            tokens.append(Token("string", node, line))
        elif m := _IDENT.match(text, i):
            tokens.append(Token("ident", m.group(), line))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            tokens.append(Token("number", float(m.group()) if m.group(1) else int(m.group()), line))
            i = m.end()
        else:
            op = next((o for o in _OPS if text.startswith(o, i)), None)
            if op is None:
                raise BicepSyntaxError(f"line {line}: unexpected character {c!r}")
            tokens.append(Token("op", op, line))
            i += len(op)
    tokens.append(Token("eof", None, line))
    return tokens


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "'": "'", "$": "$"}


def _string(text: str, i: int, line: int) -> tuple[Str, int]:
    parts: list[Any] = []
    buf: list[str] = []
    while True:
        if i >= len(text) or text[i] == "\n":
            raise BicepSyntaxError(f"line {line}: unterminated string")
        c = text[i]
        if c == "\\":
            buf.append(_ESCAPES.get(text[i + 1], text[i + 1]))
            i += 2
        elif c == "'":
            if buf:
                parts.append("".join(buf))
            return Str(parts), i + 1
        elif text.startswith("${", i):
            if buf:
                parts.append("".join(buf))
                buf = []
            depth, j = 1, i + 2
            while depth:  # find the matching brace (strings inside may hold braces)
                if j >= len(text):
                    raise BicepSyntaxError(f"line {line}: unterminated interpolation")
                if text[j] == "'":
                    _, j = _string(text, j + 1, line)
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            parts.append(Parser(tokenize(text[i + 2 : j - 1])).expression_only())
            i = j
        else:
            buf.append(c)
            i += 1


class Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.pos = 0

    # -- token helpers
    def peek(self, skip_newlines: bool = False, ahead: int = 0) -> Token:
        pos = self.pos
        seen = 0
        while True:
            tok = self.tokens[pos]
            if skip_newlines and tok.kind == "newline":
                pos += 1
                continue
            if seen == ahead:
                return tok
            seen += 1
            pos += 1

    def next(self, skip_newlines: bool = False) -> Token:
        if skip_newlines:
            self.newlines()
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def newlines(self) -> None:
        while self.tokens[self.pos].kind == "newline":
            self.pos += 1

    def expect(self, value: str, skip_newlines: bool = True) -> Token:
        tok = self.next(skip_newlines)
        if tok.value != value or tok.kind not in ("op", "ident"):
            raise BicepSyntaxError(f"line {tok.line}: expected {value!r}, found {tok.value!r}")
        return tok

    def at(self, value: str, skip_newlines: bool = False) -> bool:
        tok = self.peek(skip_newlines)
        return tok.kind in ("op", "ident") and tok.value == value

    # -- declarations
    def file(self) -> list[Declaration]:
        declarations: list[Declaration] = []
        decorators: list[Any] = []
        while True:
            self.newlines()
            tok = self.peek()
            if tok.kind == "eof":
                return declarations
            if self.at("@"):
                self.next()
                decorators.append(self.postfix())
                continue
            declaration = self.declaration()
            declaration.decorators = decorators
            decorators = []
            declarations.append(declaration)

    def declaration(self) -> Declaration:
        tok = self.next()
        keyword = tok.value
        if keyword == "targetScope":
            self.expect("=")
            return Declaration("targetScope", "targetScope", value=self.expression())
        if keyword in ("param", "output"):
            name = self.next().value
            type_ = self.type_expression()
            value = None
            if self.at("="):
                self.next()
                value = self.expression()
            return Declaration(keyword, name, type=type_, value=value)
        if keyword in ("var", "metadata"):
            name = self.next().value
            self.expect("=")
            return Declaration(keyword, name, value=self.expression())
        if keyword == "resource":
            resource = self.resource()
            return Declaration("resource", resource.symbol, type=resource.type, value=resource)
        if keyword == "module":
            name = self.next().value
            path = self.next()
            self.expect("=")
            return Declaration("module", name, type=path.value.literal, value=self.body())
        if keyword in ("type", "func", "import"):
            while self.peek().kind not in ("newline", "eof"):
                self.next()
            return Declaration(keyword, "")
        raise BicepSyntaxError(f"line {tok.line}: unexpected {keyword!r}")

    def resource(self) -> Resource:
        symbol = self.next().value
        type_tok = self.next()
        existing = False
        if self.at("existing"):
            self.next()
            existing = True
        self.expect("=")
        return Resource(symbol, type_tok.value.literal, existing, self.body())

    def body(self) -> Any:
        if self.at("if", skip_newlines=True):
            self.next(True)
            self.expect("(")
            condition = self.expression()
            self.expect(")")
            return If(condition, self.primary())
        return self.primary()

    def type_expression(self) -> Any:
        tok = self.next()
        if tok.value == "resource":
            return ("resource", self.next().value.literal)
        type_ = tok.value
        while self.at("[") and self.peek(ahead=1).value == "]":  # string[]
            self.next()
            self.next()
            type_ = f"{type_}[]"
        if self.at("?"):
            self.next()
        return type_

    # -- expressions
    def expression_only(self) -> Any:
        node = self.expression()
        self.newlines()
        if self.peek().kind != "eof":
            raise BicepSyntaxError(f"trailing tokens after expression: {self.peek().value!r}")
        return node

    def expression(self) -> Any:
        condition = self.binary(0)
        if self.at("?", skip_newlines=False):
            self.next()
            yes = self.expression()
            self.expect(":")
            no = self.expression()
            return Op("?:", [condition, yes, no])
        return condition

    _LEVELS = (("??",), ("||",), ("&&",), ("==", "!=", "=~", "!~"), ("<", ">", "<=", ">="), ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int) -> Any:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.peek().kind == "op" and self.peek().value in self._LEVELS[level]:
            op = self.next().value
            self.newlines()
            left = Op(op, [left, self.binary(level + 1)])
        return left

    def unary(self) -> Any:
        if self.peek().kind == "op" and self.peek().value in ("!", "-"):
            op = self.next().value
            return Op(op, [self.unary()])
        return self.postfix()

    def postfix(self) -> Any:
        node = self.primary()
        while True:
            tok = self.peek()
            if tok.kind != "op":
                return node
            if tok.value in (".", ".?", "::"):
                self.next()
                node = Member(node, self.next().value)
            elif tok.value == "[":
                self.next()
                node = Index(node, self.expression())
                self.expect("]")
            elif tok.value == "(":
                self.next()
                args = []
                while not self.at(")", skip_newlines=True):
                    args.append(self.expression())
                    self.newlines()
                    if self.at(","):
                        self.next()
                self.expect(")")
                node = Call(node, args)
            else:
                return node

    def primary(self) -> Any:
        tok = self.next(skip_newlines=True)
        if tok.kind == "string":
            return tok.value
        if tok.kind == "number":
            return tok.value
        if tok.kind == "ident":
            return {"true": True, "false": False, "null": None}.get(tok.value, Ident(tok.value))
        if tok.value == "(":
            node = self.expression()
            self.expect(")")
            return node
        if tok.value == "{":
            return self.object()
        if tok.value == "[":
            if self.at("for", skip_newlines=True):
                return self.for_body()
            items = []
            while not self.at("]", skip_newlines=True):
                items.append(self.expression())
                self.newlines()
                if self.at(","):
                    self.next()
            self.expect("]")
            return Arr(items)
        raise BicepSyntaxError(f"line {tok.line}: unexpected {tok.value!r}")

    def for_body(self) -> For:
        self.expect("for")
        if self.at("("):  # for (item, index) in ...
            self.next()
            variable = [self.next().value]
            while self.at(","):
                self.next()
                variable.append(self.next().value)
            self.expect(")")
        else:
            variable = self.next().value
        self.expect("in")
        source = self.expression()
        self.expect(":")
        body = self.body()
        self.expect("]")
        return For(variable, source, body)

    def object(self) -> Obj:
        obj = Obj({})
        while True:
            self.newlines()
            if self.at("}"):
                self.next()
                return obj
            if self.at(","):
                self.next()
                continue
            if self.at("@"):
                self.next()
                self.postfix()
                continue
            tok = self.next()
            if tok.kind == "ident" and tok.value == "resource" and self.peek().kind == "ident":
                obj.resources.append(self.resource())
                continue
            if tok.kind == "string":
                key = tok.value.literal or "${...}"  # an interpolated key: its value is not needed
            elif tok.kind == "ident":
                key = tok.value
            else:
                raise BicepSyntaxError(f"line {tok.line}: expected a property name, found {tok.value!r}")
            self.expect(":", skip_newlines=False)
            obj.entries[key] = self.expression()


def parse(text: str) -> list[Declaration]:
    return Parser(tokenize(text)).file()


def parse_file(path: Path) -> list[Declaration]:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except BicepSyntaxError as exc:
        raise BicepSyntaxError(f"{path}: {exc}") from None
