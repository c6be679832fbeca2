"""infra/ held to the code, without a Bicep compiler (none can be installed
here): tests/bicep.py parses the templates, these tests read them.

- every setting the app cannot run without in Azure is set, and every
  setting set is one the code reads (or the Functions host or a library
  does: listed below, each with its reader);
- the app runs as a user-assigned identity that has the roles it needs on
  storage, Application Insights and Azure OpenAI;
- nothing key-shaped: no listKeys, no key in a setting or an output, local
  (key) auth off on storage, Application Insights and Azure OpenAI;
- the platform's HTTP concurrency per instance and the app's own cap are
  one parameter.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from settings import SettingsError, model_settings, stream_settings
from tests.bicep import (
    Arr,
    BicepSyntaxError,
    Call,
    Declaration,
    For,
    Ident,
    If,
    Member,
    Obj,
    Op,
    Resource,
    Str,
    parse,
    parse_file,
    tokenize,
)
from tests.support import ROOT

INFRA = ROOT / "infra"
APP_CODE = ["function_app.py", "settings.py", "telemetry.py", "llm", "streaming", "agents", "tools", "workflows"]

# Settings infra/ may set that the app's own code does not read, and who reads them.
READ_ELSEWHERE = {
    "AzureWebJobsStorage__credential": "the Functions host (identity-based host storage)",
    "AzureWebJobsStorage__clientId": "the Functions host (which identity)",
    "AzureWebJobsStorage__blobServiceUri": "the Functions host (host storage endpoint)",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "the host and the Azure Monitor exporter (Entra ID ingestion)",
    "PYTHON_ENABLE_INIT_INDEXING": "the Python worker (required for HTTP streaming up to 3.12)",
    "AZURE_CLIENT_ID": "azure-identity's DefaultAzureCredential (which user-assigned identity)",
}
# Names that look like secrets but are not: ingestion needs an Entra ID token (DisableLocalAuth).
NOT_SECRETS = {"APPLICATIONINSIGHTS_CONNECTION_STRING"}
KEY_SHAPED = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|CONNECTION_?STRING|SAS", re.IGNORECASE)

ROLE_STORAGE_BLOB_DATA_OWNER = "b7e6dc6d-f1e8-4753-8033-0f276bb0955b"
ROLE_MONITORING_METRICS_PUBLISHER = "3913510d-42f4-4e42-8a64-420c390055eb"
ROLE_COGNITIVE_SERVICES_OPENAI_USER = "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd"


def declarations(name: str) -> list[Declaration]:
    return parse_file(INFRA / name)


def named(decls: list[Declaration], kind: str, name: str) -> Declaration:
    (found,) = [d for d in decls if d.kind == kind and d.name == name]
    return found


def resources(decls: list[Declaration]) -> list[Resource]:
    """Every resource, nested ones included."""
    found: list[Resource] = []
    todo = [d.value for d in decls if d.kind == "resource"]
    while todo:
        resource = todo.pop()
        found.append(resource)
        body = resource.body.body if isinstance(resource.body, If) else resource.body
        if isinstance(body, Obj):
            todo.extend(body.resources)
    return found


def body_of(resource: Resource) -> Obj:
    body = resource.body.body if isinstance(resource.body, If) else resource.body
    assert isinstance(body, Obj)
    return body


def path(obj: Any, *keys: str) -> Any:
    for key in keys:
        assert isinstance(obj, Obj), f"{key}: not an object"
        obj = obj.entries[key]
    return obj


def object_keys(node: Any, variables: dict[str, Any]) -> dict[str, Any]:
    """The settings an expression yields: object literals, through
    variables, ``union(...)`` and both branches of a ternary."""
    if isinstance(node, Obj):
        return dict(node.entries)
    if isinstance(node, Ident) and node.name in variables:
        return object_keys(variables[node.name], variables)
    if isinstance(node, Call) and isinstance(node.callee, Ident) and node.callee.name == "union":
        merged: dict[str, Any] = {}
        for arg in node.args:
            merged.update(object_keys(arg, variables))
        return merged
    if isinstance(node, Op) and node.op == "?:":
        return {**object_keys(node.operands[1], variables), **object_keys(node.operands[2], variables)}
    raise AssertionError(f"cannot tell which settings {node!r} holds")


@pytest.fixture(scope="module")
def app_settings() -> dict[str, Any]:
    decls = declarations("app/api.bicep")
    variables = {d.name: d.value for d in decls if d.kind == "var"}
    (site,) = [r for r in resources(decls) if r.type.startswith("Microsoft.Web/sites@")]
    (config,) = [r for r in body_of(site).resources if r.type == "config"]
    assert body_of(config).entries["name"].literal == "appsettings"
    return object_keys(body_of(config).entries["properties"], variables)


def settings_read_by_code() -> set[str]:
    """Setting names the app's code reads: string arguments of
    ``_get``/``_number``/``_flag``/``getenv``/``environ.get``/``env.get``,
    and ``os.environ[...]``."""
    names: set[str] = set()
    files = [
        p for entry in APP_CODE for p in ([ROOT / entry] if entry.endswith(".py") else (ROOT / entry).rglob("*.py"))
    ]
    for file in files:
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                reader = (isinstance(func, ast.Name) and func.id in ("_get", "_number", "_flag", "getenv")) or (
                    isinstance(func, ast.Attribute)
                    and func.attr in ("get", "getenv")
                    and isinstance(func.value, ast.Name | ast.Attribute)
                    and (getattr(func.value, "id", None) or getattr(func.value, "attr", None))
                    in ("environ", "env", "os")
                )
                if reader:
                    names.update(a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str))
            elif (
                isinstance(node, ast.Subscript)
                and isinstance(node.slice, ast.Constant)
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "environ"
            ):
                names.add(node.slice.value)
    return {n for n in names if re.fullmatch(r"[A-Z][A-Z0-9_]+", n)}


def test_every_template_parses() -> None:
    files = sorted(INFRA.rglob("*.bicep"))
    assert len(files) >= 5
    for file in files:
        assert parse_file(file)


def test_the_settings_the_app_needs_in_azure_are_set(app_settings: dict[str, Any]) -> None:
    # What the code itself says is missing in Azure with no model configured.
    with pytest.raises(SettingsError) as caught:
        model_settings({"WEBSITE_INSTANCE_ID": "x", "MODEL_PROVIDER": "azure_openai"})
    required = {*caught.value.missing, "AZURE_CLIENT_ID", "PYTHON_ENABLE_INIT_INDEXING"}
    assert required <= app_settings.keys()
    assert app_settings["MODEL_PROVIDER"].literal == "azure_openai"
    # Keyless: the code uses a key when one is set, so none may be.
    assert "AZURE_OPENAI_API_KEY" not in app_settings and "OPENAI_API_KEY" not in app_settings
    # And the model settings, as infra/ sets them, are accepted by the code.
    model = model_settings(
        {
            "MODEL_PROVIDER": "azure_openai",
            "AZURE_OPENAI_ENDPOINT": "https://x.openai.azure.com/",
            "AZURE_OPENAI_CHAT_DEPLOYMENT_NAME": "chat",
        }
    )
    assert model.api_key is None


def test_every_setting_infra_sets_is_read(app_settings: dict[str, Any]) -> None:
    read = settings_read_by_code()
    assert {"AZURE_OPENAI_ENDPOINT", "APPLICATIONINSIGHTS_CONNECTION_STRING"} <= read  # the scan finds them
    unread = sorted(set(app_settings) - read - READ_ELSEWHERE.keys())
    assert not unread, f"infra/ sets settings nothing reads: {unread}"


def test_the_app_runs_as_its_user_assigned_identity(app_settings: dict[str, Any]) -> None:
    decls = declarations("app/api.bicep")
    (site,) = [r for r in resources(decls) if r.type.startswith("Microsoft.Web/sites@")]
    body = body_of(site)
    assert path(body, "identity", "type").literal == "UserAssigned"
    auth = path(body, "properties", "functionAppConfig", "deployment", "storage", "authentication")
    assert path(auth, "type").literal == "UserAssignedIdentity"
    assert path(auth, "userAssignedIdentityResourceId") == Ident("identityId")
    # The host's storage and the model credential both name that identity.
    assert app_settings["AzureWebJobsStorage__credential"].literal == "managedidentity"
    assert app_settings["AzureWebJobsStorage__clientId"] == Ident("identityClientId")
    assert app_settings["AZURE_CLIENT_ID"] == Ident("identityClientId")
    auth_string = app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"]
    assert Ident("identityClientId") in auth_string.parts and "Authorization=AAD" in "".join(
        p for p in auth_string.parts if isinstance(p, str)
    )
    runtime = path(body, "properties", "functionAppConfig", "runtime")
    assert path(runtime, "name").literal == "python"
    main = declarations("main.bicep")
    assert named(main, "param", "pythonVersion").value.literal == "3.13"


def role_assignments(file: str) -> list[tuple[str, Any, Any]]:
    """(role id, principal, scope) of each role assignment in ``file``."""
    decls = declarations(file)
    variables = {d.name: d.value for d in decls if d.kind == "var"}
    found = []
    for resource in resources(decls):
        if not resource.type.startswith("Microsoft.Authorization/roleAssignments@"):
            continue
        body = body_of(resource)
        role = path(body, "properties", "roleDefinitionId")
        assert isinstance(role, Call) and role.callee.name == "subscriptionResourceId"
        role_id = role.args[1]
        role_id = variables[role_id.name] if isinstance(role_id, Ident) else role_id
        found.append((role_id.literal, path(body, "properties", "principalId"), body.entries["scope"]))
    return found


def test_the_identity_has_the_roles_it_needs() -> None:
    roles = {(role, principal.name, scope.name) for role, principal, scope in role_assignments("app/rbac.bicep")}
    assert (ROLE_STORAGE_BLOB_DATA_OWNER, "identityPrincipalId", "storage") in roles
    assert (ROLE_MONITORING_METRICS_PUBLISHER, "identityPrincipalId", "applicationInsights") in roles
    assert (ROLE_COGNITIVE_SERVICES_OPENAI_USER, "identityPrincipalId", "openAi") in roles
    existing = {(role, principal.name) for role, principal, _ in role_assignments("app/openai-access.bicep")}
    assert (ROLE_COGNITIVE_SERVICES_OPENAI_USER, "identityPrincipalId") in existing
    # main.bicep hands both modules the identity the app runs as.
    main = declarations("main.bicep")
    for module in ("rbac", "existingOpenAiAccess"):
        body = named(main, "module", module).value
        body = body.body if isinstance(body, If) else body
        principal = path(body, "params", "identityPrincipalId")
        assert isinstance(principal, Member) and principal.name == "identityPrincipalId"
    api_params = path(named(main, "module", "api").value, "params")
    assert path(api_params, "identityClientId").name == "identityClientId"


def test_nothing_key_shaped(app_settings: dict[str, Any]) -> None:
    for file in INFRA.rglob("*.bicep"):
        words = {t.value.lower() for t in tokenize(file.read_text(encoding="utf-8")) if t.kind == "ident"}
        assert not words & {"listkeys", "listconnectionstrings", "listaccountsas", "listservicesas", "primarykey"}, file
        outputs = [d.name for d in parse_file(file) if d.kind == "output"]
        assert not [o for o in outputs if KEY_SHAPED.search(o)], file
    shaped = [name for name in app_settings if KEY_SHAPED.search(name) and name not in NOT_SECRETS]
    assert not shaped
    # Local (key) auth is off wherever a key could exist.
    base = resources(declarations("app/base.bicep"))
    (storage,) = [r for r in base if r.type.startswith("Microsoft.Storage/storageAccounts@")]
    assert path(body_of(storage), "properties", "allowSharedKeyAccess") is False
    (insights,) = [r for r in base if r.type.startswith("Microsoft.Insights/components@")]
    assert path(body_of(insights), "properties", "DisableLocalAuth") is True
    (account,) = [
        r
        for r in resources(declarations("app/openai.bicep"))
        if r.type.startswith("Microsoft.CognitiveServices/accounts@")
    ]
    assert path(body_of(account), "properties", "disableLocalAuth") is True


def test_instance_concurrency_and_the_apps_cap_are_one_parameter(app_settings: dict[str, Any]) -> None:
    decls = declarations("app/api.bicep")
    (site,) = [r for r in resources(decls) if r.type.startswith("Microsoft.Web/sites@")]
    concurrency = path(
        body_of(site),
        "properties",
        "functionAppConfig",
        "scaleAndConcurrency",
        "triggers",
        "http",
        "perInstanceConcurrency",
    )
    assert concurrency == Ident("httpPerInstanceConcurrency")
    cap = app_settings["MAX_CONCURRENT_RUNS"]
    assert isinstance(cap, Call) and cap.callee.name == "string" and cap.args == [Ident("httpPerInstanceConcurrency")]


def test_azure_yaml_and_parameters_match_main() -> None:
    text = (ROOT / "azure.yaml").read_text(encoding="utf-8")
    assert re.search(r"^\s+host: function$", text, re.MULTILINE) and re.search(r"^\s+language: python$", text, re.M)
    main = declarations("main.bicep")
    params = {d.name: d for d in main if d.kind == "param"}
    given = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
    assert set(given) <= set(params), f"parameters main.bicep does not declare: {set(given) - set(params)}"
    required = {name for name, d in params.items() if d.value is None}
    assert required <= set(given)


def test_the_parser_reads_what_it_claims() -> None:
    (decl,) = parse("var s = union({ A: 'x${y}z', 'B-c': [1, 2] }, c ? { D: a.b.?c } : {})\n")
    node = decl.value
    assert isinstance(node, Call) and node.callee == Ident("union")
    first, _ = node.args
    assert first.entries["A"] == Str(["x", Ident("y"), "z"]) and first.entries["B-c"] == Arr([1, 2])
    assert object_keys(node, {}).keys() == {"A", "B-c", "D"}


def walk(node: Any) -> Iterator[Any]:
    """Every node under ``node`` (objects, arrays, calls, operators, strings)."""
    yield node
    children: list[Any] = []
    if isinstance(node, Obj):
        children = [*node.entries.values(), *(r.body for r in node.resources)]
    elif isinstance(node, Arr):
        children = node.items
    elif isinstance(node, Call):
        children = [node.callee, *node.args]
    elif isinstance(node, Member):
        children = [node.target]
    elif isinstance(node, Op):
        children = node.operands
    elif isinstance(node, Str):
        children = [p for p in node.parts if not isinstance(p, str)]
    elif isinstance(node, If):
        children = [node.condition, node.body]
    for child in children:
        yield from walk(child)


def test_modules_get_the_params_they_declare_and_give_the_outputs_used() -> None:
    """What a Bicep compiler would catch first: a parameter passed that the
    module does not declare, one it requires that is not passed, an output
    read that it does not have."""
    for file in INFRA.rglob("*.bicep"):
        decls = parse_file(file)
        modules = {d.name: d for d in decls if d.kind == "module"}
        for name, module in modules.items():
            target = parse_file(file.parent / module.type)
            declared = {d.name: d for d in target if d.kind == "param"}
            body = module.value.body if isinstance(module.value, If) else module.value
            given = set(path(body, "params").entries)
            assert given <= set(declared), f"{file.name}: module {name} passes undeclared {given - set(declared)}"
            required = {p for p, d in declared.items() if d.value is None}
            assert required <= given, f"{file.name}: module {name} misses {required - given}"
        outputs = {
            name: {d.name for d in parse_file(file.parent / m.type) if d.kind == "output"}
            for name, m in modules.items()
        }
        for decl in decls:
            for node in walk(decl.value if not isinstance(decl.value, Resource) else decl.value.body):
                if isinstance(node, Member) and isinstance(node.target, Member) and node.target.name == "outputs":
                    module = node.target.target
                    if isinstance(module, Ident) and module.name in outputs:
                        assert node.name in outputs[module.name], (
                            f"{file.name}: {module.name} has no output {node.name}"
                        )


def test_every_name_used_is_declared() -> None:
    """A misspelt parameter, variable, resource or module name fails here, as
    it would in the compiler. Functions (``union(...)``) are not names."""
    for file in INFRA.rglob("*.bicep"):
        decls = parse_file(file)
        declared = {d.name for d in decls if d.kind in ("param", "var", "resource", "module")}
        bodies = [d.value.body if isinstance(d.value, Resource) else d.value for d in decls]
        nested = [r for d in decls if isinstance(d.value, Resource) for r in resources([d]) if r is not d.value]
        declared |= {r.symbol for r in nested}
        for body in bodies:
            functions = {id(n.callee) for n in walk(body) if isinstance(n, Call)}
            for node in walk(body):
                if isinstance(node, Ident) and id(node) not in functions:
                    assert node.name in declared, f"{file.name}: {node.name} is not declared"


def test_the_parser_handles_the_rest_of_the_syntax_it_claims() -> None:
    text = """
// a comment { with braces }
/* a block
   comment */
@description('A \\'quoted\\' one, ${count} inside')
@allowed([1, 2])
param count int = 1
param names string[] = []
var multi = '''
line one ${not interpolated}
'''
var nested = 'a${b ? '}' : '{'}c'
var items = [for (name, i) in names: {
  key: '${name}-${i}'
}]
resource parent 'Microsoft.Example/things@2024-01-01' existing = {
  name: 'x'

  resource child 'children' = if (count > 1 && !empty(names)) {
    name: 'y'
    properties: { value: parent.properties.?maybe ?? 'default', list: [1, 2, 3] }
  }
}
output first string = items[0].key
"""
    decls = parse(text)
    kinds = [(d.kind, d.name) for d in decls]
    assert kinds == [
        ("param", "count"),
        ("param", "names"),
        ("var", "multi"),
        ("var", "nested"),
        ("var", "items"),
        ("resource", "parent"),
        ("output", "first"),
    ]
    count = decls[0]
    assert count.value == 1 and len(count.decorators) == 2 and decls[1].type == "string[]"
    assert decls[2].value.literal == "\nline one ${not interpolated}\n"
    nested = decls[3].value
    assert nested.parts[0] == "a" and nested.parts[-1] == "c" and isinstance(nested.parts[1], Op)
    assert isinstance(decls[4].value, For) and decls[4].value.variable == ["name", "i"]
    parent = decls[5].value
    assert parent.existing and parent.type == "Microsoft.Example/things@2024-01-01"
    (child,) = body_of(parent).resources
    assert isinstance(child.body, If) and child.type == "children"
    value = path(body_of(child), "properties", "value")
    assert isinstance(value, Op) and value.op == "??"
    with pytest.raises(BicepSyntaxError):
        parse("var broken = { a: 'unterminated }\n")


# App settings the Flex Consumption plan deprecates (its settings moved into
# functionAppConfig, or do not apply to it): "Flex Consumption plan
# deprecations" in Microsoft's app settings reference.
FLEX_DEPRECATED_SETTINGS = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "FUNCTIONS_MAX_HTTP_CONCURRENCY",
    "FUNCTIONS_WORKER_PROCESS_COUNT",
    "FUNCTIONS_WORKER_DYNAMIC_CONCURRENCY_ENABLED",
    "SCM_DO_BUILD_DURING_DEPLOYMENT",
    "ENABLE_ORYX_BUILD",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTOVERVNET",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_MAX_DYNAMIC_APPLICATION_SCALE_OUT",
    "WEBSITE_NODE_DEFAULT_VERSION",
    "WEBSITE_SKIP_CONTENTSHARE_VALIDATION",
    "WEBSITE_VNET_ROUTE_ALL",
    "AzureWebJobsStorage",  # a connection string with the account key; the __* settings replace it
}
# (Microsoft's own Flex templates still send alwaysOn: false, so it is not listed.)
FLEX_DEPRECATED_SITE_CONFIG = {
    "linuxFxVersion",
    "functionAppScaleLimit",
    "preWarmedInstanceCount",
    "use32BitWorkerProcess",
    "functionsRuntimeScaleMonitoringEnabled",
}


def api_version(resource: Resource) -> str:
    return resource.type.rsplit("@", 1)[1]


def test_the_function_app_has_the_flex_consumption_shape(app_settings: dict[str, Any]) -> None:
    """The shape of Microsoft's Flex Consumption templates
    (Azure-Samples/functions-quickstart-python-http-azd,
    azure-functions-flex-consumption-samples): an FC1 Linux plan, a
    ``functionapp,linux`` site whose ``functionAppConfig`` carries the
    deployment container, the scale settings and the runtime, and none of
    the settings that plan deprecates."""
    (plan,) = [r for r in resources(declarations("app/base.bicep")) if r.type.startswith("Microsoft.Web/serverfarms@")]
    assert path(body_of(plan), "sku", "name").literal == "FC1"
    assert path(body_of(plan), "sku", "tier").literal == "FlexConsumption"
    assert path(body_of(plan), "properties", "reserved") is True  # Linux

    (site,) = [r for r in resources(declarations("app/api.bicep")) if r.type.startswith("Microsoft.Web/sites@")]
    assert api_version(site) >= "2023-12-01"  # the first API version with functionAppConfig
    body = body_of(site)
    assert path(body, "kind").literal == "functionapp,linux"
    assert path(body, "properties", "serverFarmId") == Ident("planId")
    config = path(body, "properties", "functionAppConfig")
    storage = path(config, "deployment", "storage")
    assert path(storage, "type").literal == "blobContainer"
    blob_endpoint = Member(Member(Member(Ident("storage"), "properties"), "primaryEndpoints"), "blob")
    assert path(storage, "value").parts == [blob_endpoint, Ident("deploymentContainerName")]
    scale = path(config, "scaleAndConcurrency")
    assert path(scale, "instanceMemoryMB") == Ident("instanceMemoryMB")
    assert path(scale, "maximumInstanceCount") == Ident("maximumInstanceCount")
    assert path(config, "runtime", "version") == Ident("pythonVersion")
    # The host storage the settings name is the account the deployment uses.
    assert app_settings["AzureWebJobsStorage__blobServiceUri"] == blob_endpoint

    assert not FLEX_DEPRECATED_SETTINGS & app_settings.keys()
    site_config = path(body, "properties", "siteConfig")
    assert not FLEX_DEPRECATED_SITE_CONFIG & site_config.entries.keys()


def test_the_deployment_container_is_the_one_created() -> None:
    """The app reads its package from the container base.bicep creates: the
    same name reaches both modules, and the container is created there."""
    main = declarations("main.bicep")
    for module in ("base", "api"):
        assert path(named(main, "module", module).value, "params", "deploymentContainerName") == Ident(
            "deploymentContainerName"
        )
    (container,) = [r for r in resources(declarations("app/base.bicep")) if r.type == "containers"]
    assert path(body_of(container), "name") == Ident("deploymentContainerName")
    (blob_services,) = [r for r in resources(declarations("app/base.bicep")) if r.type == "blobServices"]
    assert container in body_of(blob_services).resources
    # A container name is 3-63 lowercase letters, digits and hyphens: the
    # prefix is, and the rest is cut to fit (32 + 7 characters).
    name = named(main, "var", "deploymentContainerName").value
    assert name.parts[0] == "app-package-" and len("app-package-") + 32 + 1 + 7 <= 63


def test_the_developer_gets_only_what_local_runs_use() -> None:
    """``principalId`` (the developer running azd) gets Cognitive Services
    OpenAI User, for keyless local runs (``az login``); nothing else, since
    a local run touches neither the app's storage nor its telemetry."""
    for file in ("app/rbac.bicep", "app/openai-access.bicep"):
        roles = {(role, principal.name) for role, principal, _ in role_assignments(file)}
        assert {role for role, principal in roles if principal == "developerPrincipalId"} == {
            ROLE_COGNITIVE_SERVICES_OPENAI_USER
        }
    main = declarations("main.bicep")
    description = " ".join(
        str(p) for d in named(main, "param", "principalId").decorators for a in d.args for p in a.parts
    )
    assert "Cognitive Services OpenAI User" in description


# What the app needs at run time in Azure: everything else stays out of the
# package that `azd deploy` and `func azure functionapp publish` upload (an
# instance fetches that package at every cold start).
RUNTIME_ENTRIES = {
    "function_app.py",
    "settings.py",
    "telemetry.py",
    "host.json",
    "requirements.txt",
    "agents",
    "llm",
    "streaming",
    "tools",
    "web",
    "workflows",
}


def test_the_deployment_package_holds_the_runtime_only() -> None:
    """``.funcignore`` (gitignore patterns, matched here against the
    top-level names) leaves out the tests, the tools and what ``make``
    creates (virtual environments, ``node_modules``, mutants), and nothing
    the app imports."""
    patterns = [
        line.strip().rstrip("/")
        for line in (ROOT / ".funcignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not [p for p in patterns if p.startswith("!")], "negated patterns are not handled here"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    generated = [
        line.strip().rstrip("/")
        for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith(("#", "!")) and not set(line.strip().rstrip("/")) & set("*/")
    ]
    names = {path.split("/", 1)[0] for path in tracked} | set(generated)
    assert {"node_modules", "mutants", ".venv"} <= names
    packaged = {n for n in names if not any(fnmatch.fnmatch(n, p) for p in patterns)}
    # .python_packages is what `func ... publish --build local` builds into: it belongs in the package then.
    assert packaged - {".python_packages"} == RUNTIME_ENTRIES


def test_a_run_ends_before_azures_front_end_cuts_it(app_settings: dict[str, Any]) -> None:
    """Azure answers an HTTP-triggered function for at most ~230 s: the
    deadline the app runs with in Azure (as infra/ sets it, else the code's
    default) ends a run before that, with heartbeats well inside it."""
    names = ("RUN_DEADLINE_SECONDS", "HEARTBEAT_SECONDS")
    limits = stream_settings({n: app_settings[n].literal for n in names if n in app_settings})
    assert limits.deadline_s <= 220  # room for the run's last events to reach the client
    assert limits.heartbeat_s * 4 <= limits.deadline_s
