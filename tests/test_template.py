"""One template from pack to the served model: models/trained and models/merged carry the chat
template pack rendered the rows with, for a base model without a template (the ChatML fallback)
and for a `pack.chat_template` override. Checked token for token: the merged model's tokenizer,
through the one renderer, gives exactly the conversations found in the packed rows."""

from __future__ import annotations

from collections import Counter

import pytest

from qa_forge.chat.render import CHATML
from qa_forge.core.segments import segments
from qa_forge.data.pack import encode, load_tokenizer, pack_records, write_outputs
from qa_forge.models.merge import merge
from qa_forge.training.recipe import finetune
from tests.params import params as section
from tests.smollm2 import sample_records, save_tokenizer

# a template of our own, unlike ChatML: bracketed roles instead of role markers
OVERRIDE = (
    "{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)

pytestmark = pytest.mark.usefixtures("one_thread")


def base_without_template(folder):
    """A tiny random Llama with SmolLM2's tokenizer and no chat template (like Mistral-7B-v0.1)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    save_tokenizer(folder, chat_template=None)
    tok = AutoTokenizer.from_pretrained(folder)
    assert not tok.chat_template
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def conversations(rows: list[dict]) -> Counter:
    return Counter(tuple(r["input_ids"][a:b]) for r in rows for a, b in segments(r["position_ids"]))


@pytest.mark.parametrize("override", [None, OVERRIDE], ids=["chatml_fallback", "params_override"])
def test_the_merged_model_renders_what_pack_trained_on(tmp_path, override):
    from transformers import AutoTokenizer

    records = sample_records()[:8]
    base = base_without_template(tmp_path / "base")
    pack_tok, source = load_tokenizer(base, override)
    assert source == ("params" if override else "chatml_fallback")
    rows, _, _ = pack_records(records, pack_tok, section("pack", max_seq_length=4096, valid_fraction=0.0), source)
    write_outputs(tmp_path / "packed", rows, pack_tok.chat_template)

    p = section("train", mode="lora", max_steps=1, eval_steps=None, checkpoint_dir=str(tmp_path / "ckpt"))
    finetune(p, tmp_path / "packed", base, tmp_path / "trained", tmp_path / "metrics")
    merge(section("merge"), base, tmp_path / "trained", tmp_path / "merged")

    for model in ("trained", "merged"):
        tok = AutoTokenizer.from_pretrained(tmp_path / model)
        assert tok.chat_template == (override or CHATML), model
        served = encode(records, tok)  # the one renderer, as evaluate and a server fed this tokenizer render
        assert Counter(tuple(e["input_ids"]) for e in served) == conversations(rows["train"]), model
    assert (tmp_path / "merged" / "train_info.json").read_text() == (tmp_path / "trained" / "train_info.json").read_text()
    # not vacuous: the base's own tokenizer (no template) renders differently or not at all
    plain = encode(records, load_tokenizer(base, CHATML if override else OVERRIDE)[0])
    assert Counter(tuple(e["input_ids"]) for e in plain) != conversations(rows["train"])
