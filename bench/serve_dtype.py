"""float32 against bfloat16 for serving on this machine's CPU: one stream and 8 concurrent
streams through the engine (no HTTP), and how far the greedy answers of the two agree.

    .venv/bin/python bench/serve_dtype.py
"""

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from openft.engine.generate import GenerationParams
from openft.engine.serving import ModelServer

d = Path(__file__).resolve().parent.parent / ".cache" / "test-models" / "smollm2-135m-instruct"
prompts_text = [
    "Write a long, detailed story about a lighthouse keeper.",
    "Explain how rain forms.",
    "What is the capital of France?",
    "List three uses of copper.",
]
res = {}
for dtype in ("float32", "bfloat16"):
    s = ModelServer(d, dtype=dtype)
    ps = [s.chat_prompt([{"role": "user", "content": t}]) for t in prompts_text]
    g = GenerationParams(max_new_tokens=128, temperature=0, logprobs=True)
    s.generate(ps[0], GenerationParams(max_new_tokens=2, temperature=0))
    t = time.time()
    r = s.generate(ps[0], GenerationParams(max_new_tokens=128, temperature=0))
    single = r.completion_tokens / (time.time() - t)
    t = time.time()
    with ThreadPoolExecutor(8) as ex:
        toks = list(
            ex.map(
                lambda i: s.generate(ps[0], GenerationParams(max_new_tokens=128, temperature=0)).completion_tokens,
                range(8),
            )
        )
    agg = sum(toks) / (time.time() - t)
    outs = [s.generate(p, g).choices[0] for p in ps]
    res[dtype] = outs
    print(dtype, f"single {single:.1f} tok/s, 8 streams {agg:.1f} tok/s ({agg / single:.2f}x)")
    s.close()
for i in range(len(prompts_text)):
    a, b = res["float32"][i].text, res["bfloat16"][i].text
    n = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
    la = sum(e.logprob for e in res["float32"][i].logprobs) / len(res["float32"][i].logprobs)
    lb = sum(e.logprob for e in res["bfloat16"][i].logprobs) / len(res["bfloat16"][i].logprobs)
    print(
        f"prompt {i}: same text for {n}/{len(a)} chars; mean logprob of own greedy tokens fp32 {la:.3f} bf16 {lb:.3f}"
    )
