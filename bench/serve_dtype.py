"""float32 against bfloat16 for serving on this machine's CPU: one stream and 8 concurrent
streams through the engine (no HTTP), and how far the greedy answers of the two agree.

    .venv/bin/python bench/serve_dtype.py
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openft.engine.generate import Choice, GenerationParams
from openft.engine.serving import ModelServer

MODEL_DIR = Path(__file__).resolve().parent.parent / ".cache" / "test-models" / "smollm2-135m-instruct"
QUESTIONS = [
    "Write a long, detailed story about a lighthouse keeper.",
    "Explain how rain forms.",
    "What is the capital of France?",
    "List three uses of copper.",
]
GREEDY = GenerationParams(max_new_tokens=128, temperature=0)


def measure(dtype: str) -> list[Choice]:
    server = ModelServer(MODEL_DIR, dtype=dtype)
    prompts = [server.chat_prompt([{"role": "user", "content": question}]) for question in QUESTIONS]
    server.generate(prompts[0], GenerationParams(max_new_tokens=2, temperature=0))
    started = time.perf_counter()
    single = server.generate(prompts[0], GREEDY).completion_tokens / (time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        tokens = sum(pool.map(lambda _: server.generate(prompts[0], GREEDY).completion_tokens, range(8)))
    total = tokens / (time.perf_counter() - started)
    print(f"{dtype:9s} one stream {single:5.1f} tok/s, 8 streams {total:5.1f} tok/s in total ({total / single:.2f}x)")
    with_logprobs = GenerationParams(max_new_tokens=128, temperature=0, logprobs=True)
    answers = [server.generate(prompt, with_logprobs).choices[0] for prompt in prompts]
    server.close()
    return answers


def mean_logprob(choice: Choice) -> float:
    entries = choice.logprobs or []
    return sum(entry.logprob for entry in entries) / max(len(entries), 1)


def main() -> None:
    full, half = measure("float32"), measure("bfloat16")
    for i, (a, b) in enumerate(zip(full, half, strict=True)):
        same = next((k for k in range(min(len(a.text), len(b.text))) if a.text[k] != b.text[k]), len(a.text))
        print(
            f"question {i}: same text for {same}/{len(a.text)} characters; mean logprob of its own greedy tokens"
            f" float32 {mean_logprob(a):.3f}, bfloat16 {mean_logprob(b):.3f}"
        )


if __name__ == "__main__":
    main()
