"""Plays the Functions host and the 3.13 proxy worker around the real worker
library (``azure-functions-runtime``), in its own Python 3.13 environment.

``python driver.py APP_DIR``: sends the library the host's messages
(``WorkerInitRequest``, which indexes the app and starts the HTTP-streaming
server; ``FunctionsMetadataRequest``; a ``FunctionLoadRequest`` per
function), prints one JSON line with the result, then reads JSON commands
from stdin, one per line: ``{"invoke": <function name>, "invocation_id":
..., "method": ..., "url": ..., "params": {<route parameter>: ...}}`` sends an ``InvocationRequest`` and prints
``{"invocation_id", "status", "error"}`` when the library answers it. The
HTTP request itself is the caller's to send, to the printed ``http_uri``
with ``x-ms-invocation-id``, as the host's proxy does.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import protos as protos_module

protos = protos_module.build()
# The protocol owns stdout; whatever the app or the library prints goes to stderr.
_protocol = os.fdopen(os.dup(1), "w")
os.dup2(2, 1)
sys.stdout = sys.stderr


def message(**content: Any) -> SimpleNamespace:
    """What the proxy worker hands the library: the host's message and the
    protobuf module (and the host address for the HTTP server)."""
    return SimpleNamespace(
        request=protos.StreamingMessage(**content), properties={"protos": protos, "host": "127.0.0.1"}
    )


def emit(data: dict[str, Any]) -> None:
    _protocol.write(json.dumps(data) + "\n")
    _protocol.flush()


def status(result: Any) -> str:
    return protos.StatusResult.Status.Name(result.status)


async def main(app_dir: str) -> None:
    sys.path.insert(0, app_dir)  # as the proxy worker does before indexing
    import azure_functions_runtime as runtime

    runtime.start_threadpool_executor()
    init = await runtime.worker_init_request(
        message(worker_init_request=protos.WorkerInitRequest(function_app_directory=app_dir, host_version="4.1040"))
    )
    if init.result.status != protos.StatusResult.Success:
        emit({"init": status(init.result), "error": init.result.exception.message})
        return
    listed = await runtime.functions_metadata_request(
        message(functions_metadata_request=protos.FunctionsMetadataRequest(function_app_directory=app_dir))
    )
    functions = {}
    for meta in listed.function_metadata_results:
        loaded = await runtime.function_load_request(
            message(function_load_request=protos.FunctionLoadRequest(function_id=meta.function_id, metadata=meta))
        )
        functions[meta.name] = {
            "function_id": meta.function_id,
            "load": status(loaded.result),
            "bindings": [json.loads(raw) for raw in meta.raw_bindings],
        }
    emit(
        {
            "init": status(init.result),
            "capabilities": dict(init.capabilities),
            "metadata": status(listed.result),
            "functions": functions,
        }
    )

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    pending = set()
    while line := await reader.readline():
        command = json.loads(line)
        task = asyncio.create_task(invoke(runtime, functions, command))
        pending.add(task)
        task.add_done_callback(pending.discard)
    await asyncio.gather(*pending)


async def invoke(runtime: Any, functions: dict[str, Any], command: dict[str, Any]) -> None:
    fn = functions[command["invoke"]]
    trigger = next(b for b in fn["bindings"] if b["type"] == "httpTrigger")
    request = protos.InvocationRequest(
        invocation_id=command["invocation_id"],
        function_id=fn["function_id"],
        input_data=[
            protos.ParameterBinding(
                name=trigger["name"],
                data=protos.TypedData(
                    http=protos.RpcHttp(method=command["method"], url=command["url"], params=command.get("params", {}))
                ),
            )
        ],
    )
    try:
        response = await runtime.invocation_request(message(invocation_request=request))
    except Exception as exc:  # the library raising instead of answering: report it, do not hang the caller
        emit({"invocation_id": command["invocation_id"], "status": "Raised", "error": repr(exc)})
        raise
    emit(
        {
            "invocation_id": response.invocation_id,
            "status": status(response.result),
            "error": response.result.exception.message,
        }
    )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
