// The seed's `testModel` (shared/spec/001), unchanged but for the client's base URL and key, plus
// the listing calls a Node user makes around it. Prints one JSON line for the Python test to check.
import OpenAI from "openai";

const openai = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });

async function testModel(modelId) {
  const completion = await openai.chat.completions.create({
    model: modelId,
    messages: [{ role: "user", content: "Hello! Please introduce yourself." }],
    temperature: 0.7,
  });
  console.log("Model response:", completion.choices[0].message.content);
  return completion;
}

const model = process.env.MODEL;
const jobId = process.env.JOB_ID;
const completion = await testModel(model);
const retrieved = await openai.models.retrieve(model);
const events = [];
for await (const event of openai.fineTuning.jobs.listEvents(jobId, { limit: 5 })) events.push(event);
const stream = await openai.chat.completions.create({
  model,
  messages: [{ role: "user", content: "Hello!" }],
  temperature: 0,
  max_tokens: 8,
  stream: true,
});
let streamed = "";
for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? "";
let notFound = null;
try {
  await openai.chat.completions.create({ model: "ft:nope:personal::x", messages: [{ role: "user", content: "hi" }] });
} catch (error) {
  notFound = { status: error.status, code: error.code };
}
console.log(JSON.stringify({
  finish_reason: completion.choices[0].finish_reason,
  content_type: typeof completion.choices[0].message.content,
  usage: completion.usage,
  retrieved: retrieved.id,
  events: events.length,
  event_messages: events.map((event) => event.message),
  streamed_length: streamed.length,
  not_found: notFound,
}));
