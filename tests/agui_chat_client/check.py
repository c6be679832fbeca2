"""``make agui-chat-client``: Agent Framework's real ``AGUIChatClient``
(installed in its own virtual environment) gets the app's answers over
loopback, client tool included. Not part of ``make test``: the suite checks
the wire contract the client relies on (``tests/test_agui.py``) instead of
installing a second Agent Framework."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support import AppServer


def main(python: str) -> None:
    with AppServer({"MODEL_PROVIDER": "offline", "OFFLINE_MODEL_DELAY_MS": "2"}) as app:
        done = subprocess.run(
            [python, str(Path(__file__).with_name("client.py")), app.url], capture_output=True, text=True, timeout=120
        )
    if done.returncode != 0:
        sys.exit(f"AGUIChatClient failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    checks = {
        "streamed answer names Oslo": "Oslo:" in result["streamed"],
        "the client's tool ran with the model's arguments": result["shown"] == ["Pack a coat"],
        "the model went on from the tool's result": "show_notice tool answered: shown: Pack a coat"
        in result["tool_turn"],
        "the follow-up answers for Paris": "Paris:" in result["follow_up"],
    }
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if not all(checks.values()):
        sys.exit(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
