"""The training engine: a library driven by arguments and callbacks, importing nothing else of openft."""

from openft.engine.convert import convert_gguf
from openft.engine.data import TokenizedExample, render_completion_prompt, render_prompt, tokenize_example
from openft.engine.devices import use_cpu_threads
from openft.engine.distributed import resolve_processes, train_in_processes
from openft.engine.embedded import embedded_gguf_path
from openft.engine.generate import (
    Choice,
    Delta,
    GenerationParams,
    GenerationResult,
    PromptTooLong,
    TokenLogprob,
)
from openft.engine.serving import ModelServer, Request, ServerClosed, ServerStats
from openft.engine.tiny import build_random_llama, build_tiny_model
from openft.engine.train import (
    CheckpointInfo,
    StartInfo,
    StepMetrics,
    StopRequest,
    TrainCallbacks,
    TrainConfig,
    TrainResult,
    preload_base_model,
    train,
)

__all__ = [
    "CheckpointInfo",
    "Choice",
    "Delta",
    "GenerationParams",
    "GenerationResult",
    "ModelServer",
    "PromptTooLong",
    "Request",
    "ServerClosed",
    "ServerStats",
    "StartInfo",
    "StepMetrics",
    "StopRequest",
    "TokenLogprob",
    "TokenizedExample",
    "TrainCallbacks",
    "TrainConfig",
    "TrainResult",
    "build_random_llama",
    "build_tiny_model",
    "convert_gguf",
    "embedded_gguf_path",
    "preload_base_model",
    "render_completion_prompt",
    "render_prompt",
    "resolve_processes",
    "tokenize_example",
    "train",
    "train_in_processes",
    "use_cpu_threads",
]
