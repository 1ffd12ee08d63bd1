// The Anthropic TypeScript SDK against the proxy (PROXY_URL): create, stream (every event),
// a streamed tool call, count_tokens and an error; prints what it saw as one JSON line.
import Anthropic from "@anthropic-ai/sdk";

const client = new Anthropic({ baseURL: process.env.PROXY_URL, apiKey: "unused", maxRetries: 0 });
const search = { headers: { "X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "2" } };
const ask = { model: "claude-sonnet-4-5", max_tokens: 256, messages: [{ role: "user", content: "What is 2 + 2?" }] };
const out = {};

const message = await client.messages.create(ask, search);
out.create = { id: message.id, content: message.content, stop_reason: message.stop_reason, usage: message.usage, tts: message.tts };

const stream = client.messages.stream(ask, search);
const types = [];
for await (const event of stream) types.push(event.type);
const final = await stream.finalMessage();
out.stream = { types, content: final.content, stop_reason: final.stop_reason };

const tools = [{ name: "add", description: "Add two numbers", input_schema: { type: "object" } }];
const toolStream = client.messages.stream({ ...ask, tools });
const toolFinal = await toolStream.finalMessage();
out.tool = { content: toolFinal.content, stop_reason: toolFinal.stop_reason };

out.count = await client.messages.countTokens({ model: "claude-haiku-4-5", messages: ask.messages });

try {
  await client.messages.create({ ...ask, messages: [{ role: "user", content: [{ type: "document", source: {} }] }] });
} catch (error) {
  out.error = { name: error.constructor.name, status: error.status, body: error.error };
}
console.log(JSON.stringify(out));
