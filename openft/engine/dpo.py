"""Direct Preference Optimization (Rafailov et al., 2023): learn from pairs of answers to one
prompt, one preferred and one not, without a reward model.

For a prompt x with preferred answer y_w and non-preferred y_l, the loss is

    -log sigmoid(beta * ((log p(y_w|x) - log p_ref(y_w|x)) - (log p(y_l|x) - log p_ref(y_l|x))))

where log p is the summed log-probability of the answer's tokens under the model being trained
and p_ref the same under the reference: the network as the job starts (the base model, or the
fine-tuned model it continues from). `beta` sets how far the model may move from the reference.
The reference log-probabilities of every pair are computed once, before the first step, by the
same network (LoRA starts as the identity, or as the adapter the job continues): no second copy
of the model is held, and a step runs one forward pass over its pairs.

Reported per step: the loss, the preference accuracy (the share of pairs whose implicit reward
beta * (log p - log p_ref) is higher for the preferred answer) and the mean reward margin.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedTokenizerBase

from openft.engine.data import Batch, TokenizedExample, collate, tokenize_example
from openft.engine.lm import StepStats, labeled_logprobs


@dataclass(frozen=True)
class PreferencePair:
    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def length(self) -> int:
        return max(len(self.chosen.input_ids), len(self.rejected.input_ids))


def tokenize_pair(tokenizer: PreTrainedTokenizerBase, example: Mapping[str, Any], max_seq_len: int) -> PreferencePair:
    """Each answer rendered after the input conversation; only the answer's tokens are labeled
    (earlier assistant turns of the input are context)."""
    context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in example["input"]["messages"]]

    def answer(key: str) -> TokenizedExample:
        message = {**example[key][0], "weight": 1}
        return tokenize_example(tokenizer, {"messages": [*context, message]}, max_seq_len)

    return PreferencePair(answer("preferred_output"), answer("non_preferred_output"))


def collate_pairs(pairs: Sequence[PreferencePair], pad_id: int) -> Batch:
    """Rows 0..n-1 the preferred answers, n..2n-1 the non-preferred ones."""
    return collate([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)


def sequence_logps(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """Summed log-probability of each row's labeled tokens, [rows]."""
    labeled = labeled_logprobs(model, batch)
    rows = torch.zeros(batch.input_ids.shape[0], device=labeled.logprobs.device)
    return rows.index_add(0, labeled.rows, labeled.logprobs)


def preference_stats(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> StepStats:
    """DPO's loss and figures from the [2n] log-probabilities of `collate_pairs` rows."""
    rewards = beta * (policy - reference.to(policy.device))
    chosen, rejected = rewards.chunk(2)
    margins = chosen - rejected
    return StepStats(
        loss=-F.logsigmoid(margins).mean(),
        accuracy=float((margins.detach() > 0).float().mean()),
        weight=len(margins),
        margin=float(margins.detach().mean()),
    )


@torch.no_grad()
def reference_logps(model: torch.nn.Module, batches: Sequence[Batch], device: torch.device) -> list[torch.Tensor]:
    """Each batch's log-probabilities under the model as it is now (the reference), on the CPU."""
    was_training = model.training
    model.eval()  # no dropout: the reference is the network itself
    out = [sequence_logps(model, batch.to(device)).cpu() for batch in batches]
    model.train(was_training)
    return out


class PreferenceObjective:
    """What `train` needs of DPO: batches of pairs with their reference log-probabilities, the loss
    and figures of a step, and validation."""

    def __init__(
        self,
        train_pairs: list[PreferencePair],
        valid_pairs: list[PreferencePair],
        pad_id: int,
        batch_size: int,
        beta: float,
    ) -> None:
        self.train_pairs, self.valid_pairs = train_pairs, valid_pairs
        self.pad_id, self.batch_size, self.beta = pad_id, batch_size, beta
        self.lengths = [pair.length for pair in train_pairs]
        self.valid_lengths = [pair.length for pair in valid_pairs]
        self.n_truncated = sum(pair.chosen.truncated or pair.rejected.truncated for pair in train_pairs)
        self._train_refs: list[tuple[float, float]] = []
        self._valid_refs: list[tuple[float, float]] = []

    def compute_references(self, model: torch.nn.Module, device: torch.device) -> None:
        """Before any training (and before a resume state is loaded): the reference is the network now."""
        self._train_refs = self._references(model, self.train_pairs, device)
        self._valid_refs = self._references(model, self.valid_pairs, device)

    def _references(
        self, model: torch.nn.Module, pairs: list[PreferencePair], device: torch.device
    ) -> list[tuple[float, float]]:
        chunks = [pairs[i : i + self.batch_size] for i in range(0, len(pairs), self.batch_size)]
        logps = reference_logps(model, [collate_pairs(chunk, self.pad_id) for chunk in chunks], device)
        refs: list[tuple[float, float]] = []
        for chunk_logps in logps:
            chosen, rejected = chunk_logps.chunk(2)
            refs += list(zip(chosen.tolist(), rejected.tolist(), strict=True))
        return refs

    def batch(self, indices: Sequence[int], valid: bool = False) -> tuple[Batch, torch.Tensor]:
        pairs, refs = (self.valid_pairs, self._valid_refs) if valid else (self.train_pairs, self._train_refs)
        reference = [refs[i][0] for i in indices] + [refs[i][1] for i in indices]
        return collate_pairs([pairs[i] for i in indices], self.pad_id), torch.tensor(reference)

    def stats(self, model: torch.nn.Module, batch: Batch, reference: torch.Tensor) -> StepStats:
        return preference_stats(sequence_logps(model, batch), reference, self.beta)
