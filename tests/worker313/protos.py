"""The Functions host <-> worker messages the worker library uses, as real
protobuf message classes built at run time.

``azure-functions-runtime`` takes the protobuf module from its caller
(``request.properties["protos"]``): in Azure the proxy worker passes the
classes generated from the host's ``FunctionRpc.proto``, which no PyPI
package ships. These classes declare the messages and fields the library
reads and writes, with the protocol's names and enum values; field numbers
are ours (nothing is serialized: host and worker share this process).
A field the library uses that is missing here fails loudly (protobuf
rejects unknown fields), so the declaration cannot silently drift.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, duration_pb2, message_factory, timestamp_pb2

# Importing them registers the well-known types our messages use.
_WELL_KNOWN = (duration_pb2, timestamp_pb2)

F = descriptor_pb2.FieldDescriptorProto
SCALARS = {"string": F.TYPE_STRING, "bytes": F.TYPE_BYTES, "bool": F.TYPE_BOOL, "int32": F.TYPE_INT32,
           "int64": F.TYPE_INT64, "sint64": F.TYPE_SINT64, "double": F.TYPE_DOUBLE}  # fmt: skip

# message -> [(field, type, label)] ; label: "" single, "*" repeated, "map:<value type>", "oneof:<name>"
MESSAGES: dict[str, list[tuple[str, str, str]]] = {
    "StatusResult": [("status", "StatusResult.Status", ""), ("result", "string", ""),
                     ("exception", "RpcException", "")],
    "RpcException": [("source", "string", ""), ("stack_trace", "string", ""), ("message", "string", ""),
                     ("is_user_exception", "bool", ""), ("type", "string", "")],
    "WorkerMetadata": [("runtime_name", "string", ""), ("runtime_version", "string", ""),
                       ("worker_version", "string", ""), ("worker_bitness", "string", ""),
                       ("custom_properties", "string", "map")],
    "WorkerInitRequest": [("host_version", "string", ""), ("capabilities", "string", "map"),
                          ("worker_directory", "string", ""), ("function_app_directory", "string", "")],
    "WorkerInitResponse": [("worker_version", "string", ""), ("capabilities", "string", "map"),
                           ("result", "StatusResult", ""), ("worker_metadata", "WorkerMetadata", "")],
    "FunctionsMetadataRequest": [("function_app_directory", "string", "")],
    "FunctionMetadataResponse": [("function_metadata_results", "RpcFunctionMetadata", "*"),
                                 ("result", "StatusResult", ""), ("use_default_metadata_indexing", "bool", "")],
    "BindingInfo": [("type", "string", ""), ("direction", "BindingInfo.Direction", ""),
                    ("data_type", "BindingInfo.DataType", ""), ("properties", "string", "map")],
    "RpcRetryOptions": [("max_retry_count", "int32", ""), ("delay_interval", ".google.protobuf.Duration", ""),
                        ("minimum_interval", ".google.protobuf.Duration", ""),
                        ("maximum_interval", ".google.protobuf.Duration", ""),
                        ("retry_strategy", "RpcRetryOptions.RetryStrategy", "")],
    "RpcFunctionMetadata": [("name", "string", ""), ("directory", "string", ""), ("script_file", "string", ""),
                            ("entry_point", "string", ""), ("bindings", "BindingInfo", "map"),
                            ("is_proxy", "bool", ""), ("language", "string", ""), ("raw_bindings", "string", "*"),
                            ("function_id", "string", ""), ("managed_dependency_enabled", "bool", ""),
                            ("retry_options", "RpcRetryOptions", ""), ("properties", "string", "map")],
    "FunctionLoadRequest": [("function_id", "string", ""), ("metadata", "RpcFunctionMetadata", ""),
                            ("managed_dependency_enabled", "bool", "")],
    "FunctionLoadResponse": [("function_id", "string", ""), ("result", "StatusResult", ""),
                             ("is_dependency_downloaded", "bool", "")],
    "NullableString": [("value", "string", "oneof:string")],
    "NullableDouble": [("value", "double", "oneof:double")],
    "NullableBool": [("value", "bool", "oneof:bool")],
    "NullableTimestamp": [("value", ".google.protobuf.Timestamp", "oneof:timestamp")],
    "RpcHttpCookie": [("name", "string", ""), ("value", "string", ""), ("domain", "NullableString", ""),
                      ("path", "NullableString", ""), ("expires", "NullableTimestamp", ""),
                      ("secure", "NullableBool", ""), ("http_only", "NullableBool", ""),
                      ("same_site", "RpcHttpCookie.SameSite", ""), ("max_age", "NullableDouble", "")],
    "RpcHttp": [("method", "string", ""), ("url", "string", ""), ("headers", "string", "map"),
                ("body", "TypedData", ""), ("params", "string", "map"), ("status_code", "string", ""),
                ("query", "string", "map"), ("enable_content_negotiation", "bool", ""),
                ("raw_body", "TypedData", ""), ("cookies", "RpcHttpCookie", "*"),
                ("nullable_headers", "NullableString", "map"), ("nullable_params", "NullableString", "map"),
                ("nullable_query", "NullableString", "map")],
    "TypedData": [("string", "string", "oneof:data"), ("json", "string", "oneof:data"),
                  ("bytes", "bytes", "oneof:data"), ("stream", "bytes", "oneof:data"),
                  ("http", "RpcHttp", "oneof:data"), ("int", "sint64", "oneof:data"),
                  ("double", "double", "oneof:data")],
    "ParameterBinding": [("name", "string", ""), ("data", "TypedData", "oneof:rpc_data")],
    "RpcTraceContext": [("trace_parent", "string", ""), ("trace_state", "string", ""),
                        ("attributes", "string", "map")],
    "RetryContext": [("retry_count", "int32", ""), ("max_retry_count", "int32", ""),
                     ("exception", "RpcException", "")],
    "InvocationRequest": [("invocation_id", "string", ""), ("function_id", "string", ""),
                          ("input_data", "ParameterBinding", "*"), ("trigger_metadata", "TypedData", "map"),
                          ("trace_context", "RpcTraceContext", ""), ("retry_context", "RetryContext", "")],
    "InvocationResponse": [("invocation_id", "string", ""), ("output_data", "ParameterBinding", "*"),
                           ("return_value", "TypedData", ""), ("result", "StatusResult", "")],
    "FunctionEnvironmentReloadResponse": [("worker_metadata", "WorkerMetadata", ""),
                                          ("capabilities", "string", "map"), ("result", "StatusResult", "")],
    "StreamingMessage": [("request_id", "string", ""),
                         ("worker_init_request", "WorkerInitRequest", "oneof:content"),
                         ("functions_metadata_request", "FunctionsMetadataRequest", "oneof:content"),
                         ("function_load_request", "FunctionLoadRequest", "oneof:content"),
                         ("invocation_request", "InvocationRequest", "oneof:content")],
}  # fmt: skip

ENUMS: dict[str, list[tuple[str, int]]] = {
    "StatusResult.Status": [("Failure", 0), ("Success", 1), ("Cancelled", 2)],
    "BindingInfo.Direction": [("in", 0), ("out", 1), ("inout", 2)],
    "BindingInfo.DataType": [("undefined", 0), ("string", 1), ("binary", 2), ("stream", 3)],
    "RpcRetryOptions.RetryStrategy": [("exponential_backoff", 0), ("fixed_delay", 1)],
    "RpcHttpCookie.SameSite": [("None", 0), ("Lax", 1), ("Strict", 2), ("ExplicitNone", 3)],
}

PACKAGE = "functions_test_protos"


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(name=f"{PACKAGE}.proto", package=PACKAGE, syntax="proto3")
    file.dependency.extend(["google/protobuf/duration.proto", "google/protobuf/timestamp.proto"])
    messages = {}
    for name in MESSAGES:
        messages[name] = file.message_type.add(name=name)
    for enum_name, values in ENUMS.items():
        owner, short = enum_name.split(".")
        enum = messages[owner].enum_type.add(name=short)
        for value_name, number in values:
            enum.value.add(name=value_name, number=number)
    for name, fields in MESSAGES.items():
        message = messages[name]
        oneofs: dict[str, int] = {}
        for number, (field_name, type_name, label) in enumerate(fields, start=1):
            field = message.field.add(name=field_name, number=number, label=F.LABEL_OPTIONAL)
            if label == "map":
                entry_name = "".join(p.capitalize() for p in field_name.split("_")) + "Entry"
                entry = message.nested_type.add(name=entry_name)
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=F.LABEL_OPTIONAL, type=F.TYPE_STRING)
                value = entry.field.add(name="value", number=2, label=F.LABEL_OPTIONAL)
                _set_type(value, type_name)
                field.label = F.LABEL_REPEATED
                field.type = F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{name}.{entry_name}"
                continue
            if label == "*":
                field.label = F.LABEL_REPEATED
            elif label.startswith("oneof:"):
                group = label.split(":", 1)[1]
                if group not in oneofs:
                    oneofs[group] = len(message.oneof_decl)
                    message.oneof_decl.add(name=group)
                field.oneof_index = oneofs[group]
            _set_type(field, type_name)
    return file


def _set_type(field: Any, type_name: str) -> None:
    if type_name in SCALARS:
        field.type = SCALARS[type_name]
    elif type_name in ENUMS:
        field.type = F.TYPE_ENUM
        field.type_name = f".{PACKAGE}.{type_name}"
    else:
        field.type = F.TYPE_MESSAGE
        field.type_name = type_name if type_name.startswith(".") else f".{PACKAGE}.{type_name}"


def build() -> SimpleNamespace:
    """A module-like namespace: ``protos.TypedData``, ``protos.StatusResult.Success``, ..."""
    pool = descriptor_pool.Default()
    try:
        file = pool.FindFileByName(f"{PACKAGE}.proto")
    except KeyError:
        pool.Add(_file())
        file = pool.FindFileByName(f"{PACKAGE}.proto")
    return SimpleNamespace(
        **{name: message_factory.GetMessageClass(file.message_types_by_name[name]) for name in MESSAGES}
    )
