"""Serving under load, through the HTTP API with the official SDK: a live `openft serve` on the
embedded SmolLM2-135M-Instruct with 4 fine-tuned adapters (trained once, kept in the data dir).

    .venv/bin/python bench/serve_load.py [--tokens 128] [--streams 1,4,8,16] [--data-dir .cache/bench-serve]

Prints, in one run, each figure beside its baseline or target:
- single-stream decode tok/s through the API (base model, and through an adapter) beside plain
  `transformers.generate` on the same prompt and token count, in this process;
- aggregate tok/s at each number of concurrent streams, over the 4 adapters and the base model
  in turn, and p50/p99 time to first token;
- p50/p99 latency of `GET /v1/models` while the largest number of streams runs (timed then only,
  so that its own requests don't slow the other figures);
- resident memory per loaded adapter (server RSS before and after loading them).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
MODEL = "smollm2-135m-instruct"
TOPICS = ["a lighthouse keeper", "a storm at sea", "a lost cat", "a city of glass", "an old clockmaker"]


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "OPENFT_DATA_DIR": str(data_dir),
        "OPENFT_MODELS_DIR": str(REPO / ".cache" / "test-models"),
        "OPENFT_PRELOAD_MODELS": MODEL,
        "OPENFT_WORKER_POLL_SECONDS": "0.5",
        "OPENFT_LOG_LEVEL": "WARNING",
    }
    log = (data_dir / "server.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "openft", "serve", "--port", str(port)], env=env, stdout=log, stderr=log, cwd=REPO
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            state = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
            if state.get("models", {}).get(MODEL, {}).get("state") == "ready":
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the server did not become ready; see server.log in the data dir")


def adapters(client: openai.OpenAI, count: int) -> list[str]:
    """`count` fine-tuned models of the base (one short training job each, reused across runs)."""
    names = sorted(m.id for m in client.models.list() if m.id.startswith(f"ft:{MODEL}:") and ":ckpt-" not in m.id)
    for i in range(len(names), count):
        lines = [
            json.dumps(
                {"messages": [{"role": "user", "content": f"Say hi {j}"}, {"role": "assistant", "content": f"Hi {i}!"}]}
            )
            for j in range(10)
        ]
        file = client.files.create(file=("hi.jsonl", "\n".join(lines).encode()), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            model=MODEL,
            training_file=file.id,
            suffix=f"bench{i}",
            hyperparameters={"n_epochs": 1, "batch_size": 10},
        )
        print(f"training adapter {i + 1}/{count} ({job.id}) ...", flush=True)
        while job.status not in ("succeeded", "failed", "cancelled"):
            time.sleep(1)
            job = client.fine_tuning.jobs.retrieve(job.id)
        if job.status != "succeeded":
            raise SystemExit(f"training failed: {job.error}")
        names.append(job.fine_tuned_model)
    return names[:count]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a long, detailed story about {TOPICS[i % len(TOPICS)]}."}]


def stream_once(client: openai.OpenAI, model: str, i: int, tokens: int) -> tuple[float, float, int]:
    """(seconds to the first token, seconds in all, completion tokens) of one streamed chat."""
    started = time.perf_counter()
    first = None
    usage = 0
    chunks = client.chat.completions.create(
        model=model,
        messages=messages(i),  # type: ignore[arg-type]
        max_tokens=tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in chunks:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage:
            usage = chunk.usage.completion_tokens
    return first or 0.0, time.perf_counter() - started, usage


def concurrent(client: openai.OpenAI, models: list[str], streams: int, tokens: int) -> tuple[float, list[float]]:
    """Aggregate completion tok/s and every stream's time to first token."""
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        result = stream_once(client, models[i % len(models)], i, tokens)
        with lock:
            results.append(result)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return sum(r[2] for r in results) / elapsed, [r[0] for r in results]


class timed_models:
    """Times `GET /v1/models` every 50 ms on a thread of its own until `stop`."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url
        self._stopping = threading.Event()
        self._latencies: list[float] = []
        self._thread = threading.Thread(target=self._poll)
        self._thread.start()

    def _poll(self) -> None:
        with httpx.Client(base_url=self._base_url, headers={"Authorization": "Bearer local"}) as http:
            while not self._stopping.is_set():
                started = time.perf_counter()
                http.get("/models").raise_for_status()
                self._latencies.append(time.perf_counter() - started)
                self._stopping.wait(0.05)

    def stop(self) -> list[float]:
        self._stopping.set()
        self._thread.join()
        return self._latencies


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def hf_generate_speed(model_dir: Path, tokens: int) -> float:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    ids = tokenizer.apply_chat_template(messages(0), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    prompt = ids["input_ids"]

    def run() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            model.generate(prompt, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0)
        return time.perf_counter() - started

    run()
    return tokens / statistics.median(run() for _ in range(3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", default="1,4,8,16")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".cache" / "bench-serve")
    parser.add_argument("--port", type=int, default=8765)
    arguments = parser.parse_args()
    arguments.data_dir.mkdir(parents=True, exist_ok=True)
    tokens = arguments.tokens
    process = start_server(arguments.data_dir, arguments.port)
    base_url = f"http://127.0.0.1:{arguments.port}/v1"
    client = openai.OpenAI(base_url=base_url, api_key="local", max_retries=0, timeout=600)
    try:
        stream_once(client, MODEL, 0, 4)  # warm up
        rss_base = rss_mib(process.pid)
        tuned = adapters(client, 4)
        for name in tuned:
            stream_once(client, name, 0, 2)  # load each adapter
        rss_adapters = rss_mib(process.pid)
        models = [MODEL, *tuned]

        single = [stream_once(client, MODEL, 0, tokens) for _ in range(3)]
        base_rate = statistics.median(r[2] / (r[1] - r[0]) for r in single)
        via_adapter = [stream_once(client, tuned[0], 0, tokens) for _ in range(3)]
        adapter_rate = statistics.median(r[2] / (r[1] - r[0]) for r in via_adapter)
        produced = single[0][2]

        rows = []
        counts = [int(n) for n in arguments.streams.split(",")]
        for count in counts:
            # GET /v1/models is timed under the largest load only: the poller's own requests
            # would otherwise take their share of the two cores from the other figures.
            latencies = timed_models(base_url) if count == max(counts) else None
            rate, ttft = concurrent(client, models, count, tokens)
            rows.append((count, rate, ttft, latencies.stop() if latencies else []))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)

    model_dir = REPO / ".cache" / "test-models" / MODEL
    hf_rate = hf_generate_speed(model_dir, produced)
    print(f"\nopenft serving benchmark: {MODEL}, CPU threads {torch.get_num_threads()}, greedy, {tokens} max tokens")
    print(f"single stream, base model:     {base_rate:7.1f} tok/s   (decode, after the first token)")
    print(f"transformers.generate:         {hf_rate:7.1f} tok/s   <- baseline; target: single stream >= baseline")
    print(
        f"single stream, via an adapter: {adapter_rate:7.1f} tok/s   = {adapter_rate / base_rate:.2f}x base;"
        " target >= 0.9x"
    )
    single_rate = rows[0][1] if rows[0][0] == 1 else base_rate
    print("\nstreams  aggregate tok/s  x single  TTFT p50  TTFT p99  GET /v1/models p50  p99   (4 adapters + base)")
    for count, rate, ttft, latencies in rows:
        models_latency = (
            f"  {1000 * percentile(latencies, 0.5):16.1f}ms  {1000 * percentile(latencies, 0.99):5.1f}ms"
            if latencies
            else ""
        )
        print(
            f"{count:7d}  {rate:15.1f}  {rate / single_rate:8.2f}"
            f"  {percentile(ttft, 0.5):7.2f}s  {percentile(ttft, 0.99):7.2f}s{models_latency}"
        )
    print("targets: 8 streams >= 4x single; GET /v1/models p99 < 100 ms under the largest load")
    per_adapter = (rss_adapters - rss_base) / 4
    print(
        f"\nmemory: server RSS {rss_base:.0f} MiB with the base model, {rss_adapters:.0f} MiB with 4 adapters "
        f"loaded: {per_adapter:.1f} MiB per adapter"
    )


if __name__ == "__main__":
    main()
