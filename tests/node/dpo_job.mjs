// A DPO job from a fine-tuned model with the official openai npm package, as OpenAI's guide writes
// it: upload a preference file, create the job with method dpo, wait for it, chat with the result.
// Prints one JSON line for the Python test to check.
import OpenAI, { toFile } from "openai";

const openai = new OpenAI({ baseURL: process.env.OPENAI_BASE_URL, apiKey: process.env.OPENAI_API_KEY, maxRetries: 0 });

const lines = [];
for (let i = 0; i < 10; i++) {
  lines.push(JSON.stringify({
    input: { messages: [{ role: "user", content: `What is ${i} plus ${i}?` }] },
    preferred_output: [{ role: "assistant", content: `${2 * i}.` }],
    non_preferred_output: [{ role: "assistant", content: "I don't know." }],
  }));
}
const file = await openai.files.create({
  file: await toFile(Buffer.from(lines.join("\n")), "preferences.jsonl"),
  purpose: "fine-tune",
});
let job = await openai.fineTuning.jobs.create({
  model: process.env.MODEL,
  training_file: file.id,
  method: { type: "dpo", dpo: { hyperparameters: { beta: 0.2, n_epochs: 1 } } },
});
const deadline = Date.now() + 240_000;
while (!["succeeded", "failed", "cancelled"].includes(job.status) && Date.now() < deadline) {
  await new Promise((resolve) => setTimeout(resolve, 500));
  job = await openai.fineTuning.jobs.retrieve(job.id);
}
let answer = null;
if (job.status === "succeeded") {
  const completion = await openai.chat.completions.create({
    model: job.fine_tuned_model,
    messages: [{ role: "user", content: "What is 2 plus 2?" }],
    max_tokens: 5,
  });
  answer = completion.choices[0].message.content;
}
console.log(JSON.stringify({
  status: job.status,
  error: job.error,
  method: job.method,
  hyperparameters: job.hyperparameters,
  model: job.model,
  fine_tuned_model: job.fine_tuned_model,
  answer_type: typeof answer,
}));
