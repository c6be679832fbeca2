// Drives the app's AG-UI endpoints with the real TypeScript client,
// @ag-ui/client's HttpAgent, the way a front end (CopilotKit) does.
//
//   node tests/agui_client.mjs <scenario> <base url> <output file>
//
// Scenarios: weather (a question, then a second turn built from the
// client's own messages), client-tool (a frontend tool round trip),
// workflow (researcher then writer), failure (one run that fails), abort
// (stop on the first words). Writes one JSON document to <output file>
// (not stdout: Node exits before a piped stdout drains): per run, the
// events the client saw, its messages afterwards, what it resolved or
// rejected with, and the request body it sent.
import { writeFileSync } from "node:fs";
import { HttpAgent } from "@ag-ui/client";

const [scenario, base, output] = process.argv.slice(2);
const KEY = "functions-key-for-tests";

function agentFor(path) {
  const sent = [];
  const agent = new HttpAgent({
    url: `${base}${path}`,
    headers: { "x-functions-key": KEY },
    // The agent's own fetch, recording what it sends.
    fetch: (url, init) => {
      sent.push(JSON.parse(init.body));
      return fetch(url, init);
    },
  });
  return { agent, sent };
}

async function run(agent, sent, params) {
  const events = [];
  const record = { events };
  try {
    const { newMessages } = await agent.runAgent(params, { onEvent: ({ event }) => void events.push(event) });
    record.newMessages = newMessages;
  } catch (error) {
    record.rejected = String(error?.message ?? error);
  }
  record.messages = structuredClone(agent.messages);
  record.request = sent.at(-1);
  return record;
}

const NOTICE = {
  name: "show_notice",
  description: "Shows a notice in the app.",
  parameters: { type: "object", properties: { text: { type: "string" } }, required: ["text"] },
};

const runs = [];
if (scenario === "weather") {
  const { agent, sent } = agentFor("/api/agent/ag-ui");
  agent.addMessage({ id: "u1", role: "user", content: "What is the weather in Oslo?" });
  runs.push(await run(agent, sent));
  agent.addMessage({ id: "u2", role: "user", content: "And in Paris?" });
  runs.push(await run(agent, sent));
} else if (scenario === "client-tool") {
  const { agent, sent } = agentFor("/api/agent/ag-ui");
  agent.addMessage({ id: "u1", role: "user", content: 'Weather in Oslo? Then please show_notice {"text": "Pack a coat"}' });
  const first = await run(agent, sent, { tools: [NOTICE] });
  runs.push(first);
  // The front end runs its tool for each call the server left pending.
  const pending = first.events.find((e) => e.type === "RUN_FINISHED")?.outcome?.pendingToolCallIds ?? [];
  for (const id of pending) {
    const call = agent.messages.flatMap((m) => m.toolCalls ?? []).find((c) => c.id === id);
    const { text } = JSON.parse(call.function.arguments);
    agent.addMessage({ id: `result-${id}`, role: "tool", toolCallId: id, content: `shown: ${text}` });
  }
  runs.push(await run(agent, sent, { tools: [NOTICE] }));
} else if (scenario === "failure") {
  const { agent, sent } = agentFor("/api/agent/ag-ui");
  agent.addMessage({ id: "u1", role: "user", content: "What is the weather in Oslo?" });
  runs.push(await run(agent, sent));
} else if (scenario === "workflow") {
  const { agent, sent } = agentFor("/api/workflow/ag-ui");
  agent.addMessage({ id: "u1", role: "user", content: "Research the weather in Oslo and write a poem" });
  runs.push(await run(agent, sent));
} else if (scenario === "abort") {
  // The user presses stop as the first words arrive.
  const { agent, sent } = agentFor("/api/agent/ag-ui");
  agent.addMessage({ id: "u1", role: "user", content: "Tell me a long story" });
  const events = [];
  const record = { events };
  try {
    await agent.runAgent(
      {},
      {
        onEvent: ({ event }) => void events.push(event),
        onTextMessageContentEvent: () => {
          record.abortedAt = Date.now();
          agent.abortRun();
        },
      },
    );
  } catch (error) {
    record.rejected = String(error?.message ?? error);
  }
  record.request = sent.at(-1);
  runs.push(record);
} else {
  throw new Error(`unknown scenario ${scenario}`);
}
writeFileSync(output, JSON.stringify({ runs }));
