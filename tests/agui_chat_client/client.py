"""Agent Framework's ``AGUIChatClient`` against the app's AG-UI endpoint.

Runs under its own virtual environment (see ``requirements.txt`` here),
started by ``check.py``: ``python client.py <base url>``. Prints one JSON
object: the text of three turns (a weather question; a question that makes
the model call this client's own ``show_notice`` tool, which the client
runs locally and sends back; a follow-up in the same session) and what the
tool was called with.
"""

import asyncio
import json
import sys

from agent_framework import Agent, tool
from agent_framework.ag_ui import AGUIChatClient

shown: list[str] = []


@tool(description="Shows a notice in the app.")
def show_notice(text: str) -> str:
    shown.append(text)
    return f"shown: {text}"


async def main(base_url: str) -> None:
    client = AGUIChatClient(endpoint=f"{base_url}/api/agent/ag-ui")
    plain = Agent(name="front", client=client)
    streamed = ""
    async for update in plain.run("What is the weather in Oslo?", stream=True):
        streamed += update.text or ""
    with_tool = Agent(name="front-tools", client=client, tools=[show_notice])
    session = with_tool.create_session()
    tool_turn = await with_tool.run('Weather in Oslo? Then please show_notice {"text": "Pack a coat"}', session=session)
    follow_up = await with_tool.run("And in Paris?", session=session)
    print(json.dumps({"streamed": streamed, "tool_turn": tool_turn.text, "follow_up": follow_up.text, "shown": shown}))


asyncio.run(main(sys.argv[1]))
