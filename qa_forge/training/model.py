"""Loading the model to train: full (fp32 master weights), LoRA, or QLoRA (4-bit base + adapter)."""

from __future__ import annotations

from pathlib import Path

from qa_forge.training.params import TrainParams


def load_model(p: TrainParams, base: Path):
    import torch
    from transformers import AutoModelForCausalLM

    if p.attn_implementation == "sdpa_varlen":
        from qa_forge.training import attention

        attention.register()
    kwargs = {"attn_implementation": p.attn_implementation}
    if p.mode == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16
        )
        kwargs["dtype"] = torch.bfloat16
    else:
        # full: fp32 master weights (bf16 runs under autocast); lora: a frozen base may sit in bf16
        kwargs["dtype"] = torch.bfloat16 if (p.bf16 and p.mode == "lora") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.config.use_cache = False  # packed rows: the cache path builds the wrong mask
    if p.mode == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if p.mode == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=p.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    cfg = LoraConfig(
        r=p.lora.r,
        lora_alpha=p.lora.alpha,
        lora_dropout=p.lora.dropout,
        target_modules=p.lora.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, cfg)
