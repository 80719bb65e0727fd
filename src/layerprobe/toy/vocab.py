"""The toy tokenizer: a word-level vocabulary in Hugging Face format with a think-tags chat template."""

from __future__ import annotations

from pathlib import Path
from typing import TypedDict

from layerprobe.toy.tasks import KEYS_A, KEYS_B, MARKERS, OPS

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
Q_OPEN, Q_CLOSE = "<q>", "</q>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
BOXED_OPEN, BOXED_CLOSE = "\\boxed{", "}"
WAIT = "Wait"
SPECIALS = [PAD, EOS, UNK, Q_OPEN, Q_CLOSE, THINK_OPEN, THINK_CLOSE]
WORDS = [BOXED_OPEN, BOXED_CLOSE, "x", "=", "fact", WAIT, ",", "let", "me", "check"]
DIGITS = [str(d) for d in range(10)]
VOCAB: list[str] = SPECIALS + WORDS + DIGITS + MARKERS + OPS + KEYS_A + KEYS_B
VOCAB_SIZE = 96  # padded to a multiple of 8
assert len(VOCAB) <= VOCAB_SIZE, len(VOCAB)

# The user's turn is wrapped in <q> ... </q>; the reasoning format then opens <think>.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}<q> {{ message['content'] }} </q>"
    "{% elif message['role'] == 'assistant' %} {{ message['content'] }} <eos>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %} {% endif %}"
)


def build_tokenizer():
    """A PreTrainedTokenizerFast over VOCAB, splitting on whitespace, with the toy chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(VOCAB)}, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[Q_OPEN, Q_CLOSE, THINK_OPEN, THINK_CLOSE],
        padding_side="left",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tokenizer(out_dir: str | Path) -> None:
    build_tokenizer().save_pretrained(out_dir)


class _TokenIds(TypedDict):
    pad_token_id: int
    eos_token_id: int
    bos_token_id: None


TOKEN_IDS_FOR_CONFIG: _TokenIds = {"pad_token_id": VOCAB.index(PAD), "eos_token_id": VOCAB.index(EOS), "bos_token_id": None}
