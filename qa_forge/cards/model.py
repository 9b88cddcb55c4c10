"""The model card of the released model (models/merged): the hub's metadata (base model, datasets,
licence, eval results as model-index) through huggingface_hub's ModelCardData and EvalResult, and a
body with the base model and its revision, the training data and its licences, the training
params, every score with its 95 % interval, package versions, how to use it and its limits.

model-index holds the fine-tuned model's values only: its format has no field for an interval
(a string value such as "0.55 ± 0.2" would be one, but hub tools read numbers), so the intervals,
the base model's scores and the difference are in the body."""

from __future__ import annotations

import json

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from qa_forge.cards import licenses
from qa_forge.cards.markdown import count, interval, is_interval, table
from qa_forge.cards.run import Run
from qa_forge.data.sources import SOURCES, loader

SMALL_N = 200  # below this many questions a set's intervals are too wide to rank close models
# train params shown on the card, in this order (whichever the params have)
TRAIN_KEYS = (
    "mode",
    "learning_rate",
    "lr_scheduler_type",
    "warmup_ratio",
    "weight_decay",
    "num_train_epochs",
    "max_steps",
    "max_tokens",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_processes",
    "gradient_checkpointing",
    "bf16",
    "attn_implementation",
    "deepspeed",
    "shuffle",
    "seed",
)
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")
EXAMPLE_QUESTION = "Which city is the capital of the country where Angkor Wat is located?"


def retriever_name(run: Run) -> str:
    """The retriever the evaluation searched with: `retrieve.model`, or it fine-tuned by train_retriever."""
    name = f"`{run.params['retrieve'].get('model')}`"
    if (run.params.get("retriever") or {}).get("finetune"):
        return f"{name} fine-tuned on this run's training pairs (the train_retriever stage, `metrics/retrieval_tuning.json`)"
    return name


def license_of(run: Run) -> str:
    """The released model's licence: cards.license, else the base model's (unknown when unlisted)."""
    return run.cards.license or run.base.license


def eval_results(run: Run) -> list[EvalResult]:
    """One EvalResult per eval set and score with a fine-tuned value (treated as data: whatever
    sets and scores metrics/summary.json holds)."""
    out = []
    eval_sources = run.params["fetch"].get("eval") or {}
    for name, block in run.sets.items():
        spec = eval_sources.get(name) or {}
        pretty = loader(name).DATASET.name if name in SOURCES else name
        hub = spec.get("hub")
        dataset_type = hub or spec.get("path") or name
        dataset_name = pretty if hub else f"{pretty} (local file {spec.get('path')})" if spec.get("path") else pretty
        for metric, scores in block.items():
            fine = scores.get("finetuned") if isinstance(scores, dict) else None
            if not is_interval(fine) or fine["value"] is None:
                continue
            out.append(
                EvalResult(
                    task_type="question-answering",
                    task_name="Multi-hop question answering with a retrieve tool",
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_config=spec.get("hub_config"),
                    dataset_split=spec.get("split"),
                    dataset_revision=spec.get("revision"),
                    metric_type=metric,
                    metric_value=fine["value"],
                    metric_name=f"{metric} (n={fine.get('n')})",
                )
            )
    return out


def card_data(run: Run) -> ModelCardData:
    results = eval_results(run)
    datasets = sorted({s.hub for s in run.trained_on if s.hub})
    tags = ["qa-forge", "question-answering", "multi-hop", "retrieval", "tool-use", run.params["train"].get("mode", "")]
    extra = {"base_model_relation": "finetune"} if run.base.hub_id else {}
    return ModelCardData(
        base_model=run.base.hub_id,
        datasets=datasets or None,
        license=license_of(run),
        language=run.cards.language,
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=[t for t in tags if t],
        model_name=run.cards.model_name,
        eval_results=results or None,
        **extra,
    )


# --- body ------------------------------------------------------------------------------------------


def _intro(run: Run) -> str:
    mode = run.params["train"].get("mode")
    return "\n".join(
        [
            f"# {run.cards.model_name}",
            "",
            (
                f"A multi-hop question-answering model: {run.base.title} fine-tuned ({mode}) by "
                "qa-forge to answer a question by calling a `retrieve` tool as often as it needs, "
                "one fact at a time, answering each step and then combining them, only from what it retrieved. "
                "This card describes the model in `models/merged`; the `cards` stage writes it from the run's params "
                "and metrics, and the training data has its own card (`cards/dataset/README.md`)."
            ),
        ]
    )


def _base(run: Run) -> str:
    lines = ["## Base model", "", f"- {run.base.how}.", f"- Licence: {run.base.license_text}."]
    if run.base.revision:
        lines.append(f"- Revision: `{run.base.revision}`.")
    lines.append(f"- Merged weights saved in {run.params['merge']['dtype']}.")
    return "\n".join(lines)


def _data(run: Run) -> str:
    rows = [[s.info.name, s.origin, s.license_text, count(s.fetched.get("records")), count(s.kept)] for s in run.sources]
    rows += [
        [src, "written by the generator (below)", run.generator.license_text, "", count(v.get("kept"))] for src, v in run.generated.items()
    ]
    p = run.pack
    lines = [
        "## Training data",
        "",
        (
            "Public QA sources, their answers completed by a generator LLM where they had none, and questions the "
            "generator wrote, filtered by rules (counts from `metrics/fetch.json` and `metrics/filter.json`):"
        ),
        "",
        table(["source", "from", "licence", "records fetched", "records trained on"], rows),
        "",
        f"Generator: {run.generator.how}; licence {run.generator.license_text}.",
        "",
        (
            f"The filter kept {count(run.filter.get('kept'))} of {count(run.filter.get('records'))} records. "
            f"`pack` rendered them into {count(p.get('conversations_train'))} training and "
            f"{count(p.get('conversations_valid'))} validation conversations ({count(p.get('tokens'))} tokens, "
            f"at most {count(p.get('max_seq_length'))} a row, packed into {count(p.get('rows_train'))} training rows; "
            f"`metrics/pack.json`)."
        ),
    ]
    if any(s.local for s in run.trained_on):
        lines += [
            "",
            (
                "A source read from a local file is listed with its dataset's licence, assumed to apply to the file: "
                "the repo's `data/samples/` files are small samples in each dataset's format."
            ),
        ]
    return "\n".join(lines)


def _training(run: Run) -> str:
    t = run.params["train"]
    rows = [[k, _value(t[k])] for k in TRAIN_KEYS if k in t]
    if t.get("mode") in ("lora", "qlora") and isinstance(t.get("lora"), dict):
        rows += [[f"lora.{k}", _value(t["lora"][k])] for k in LORA_KEYS if k in t["lora"]]
    batch = [t.get(k) for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "num_processes")]
    if all(isinstance(x, int) for x in batch):
        rows.append(["rows per optimiser step", f"`{batch[0] * batch[1] * batch[2]}`"])
    info = run.train_info
    rows += [[k, _value(info[k])] for k in ("global_step", "tokens_seen", "run_key") if k in info]
    return "\n".join(["## Training", "", "params `train` (and `models/merged/train_info.json`):", "", table(["param", "value"], rows)])


def _value(v) -> str:
    return f"`{json.dumps(v)}`" if isinstance(v, list | dict | bool) or v is None else f"`{v}`"


def _evaluation(run: Run) -> str:
    ev = run.params["evaluate"]
    lines = [
        "## Evaluation",
        "",
        (
            f"Each question is answered in the retrieve-calling conversation (at most {ev.get('max_calls')} retrieve calls; "
            f"retriever {retriever_name(run)}), by the base model and by this one, on the same questions. "
            "Scores with their 95 % intervals in brackets (Wilson for 0/1 outcomes, else a percentile bootstrap; the "
            "difference is paired by question), from `metrics/summary.json`:"
        ),
    ]
    for name, block in run.sets.items():
        spec = (ev.get("sets") or {}).get(name) or {}
        setup = ", ".join(f"{k} {spec[k]}" for k in ("scope", "top_k") if k in spec)
        lines += ["", f"### {name}", "", f"n = {block.get('n', 'n/a')} questions" + (f" ({setup})" if setup else "") + ".", ""]
        rows = []
        for metric, scores in block.items():
            if not isinstance(scores, dict) or not any(is_interval(scores.get(k)) for k in ("base", "finetuned", "difference")):
                continue
            rows.append(
                [metric, interval(scores.get("base")), interval(scores.get("finetuned")), interval(scores.get("difference"), signed=True)]
            )
        lines.append(table(["score", "base", "fine-tuned", "difference"], rows))
    lines += ["", "### LLM judge", ""]
    judge = run.judge
    if not judge.get("enabled"):
        lines.append("The judge was off (`judge.enabled: false`): no judged accuracy or win rate for this run.")
    else:
        lines.append(f"Judge: `{run.params['judge']['llm']['model']}`.")
        lines.append("")
        acc = judge.get("accuracy") or {}
        rows = [["accuracy", interval(acc.get("base")), interval(acc.get("finetuned")), interval(acc.get("difference"), signed=True)]]
        lines.append(table(["score", "base", "fine-tuned", "difference"], rows))
        if is_interval(judge.get("win_rate")):
            lines += [
                "",
                f"Win rate of the fine-tuned model over the base (both orders agree): {interval(judge['win_rate'])}, n = {judge['win_rate'].get('n')}.",
            ]
    return "\n".join(lines)


def _packages(run: Run) -> str:
    packages = run.train_info.get("packages") or {}
    if not packages:
        return "## Package versions\n\n`models/merged/train_info.json` records none."
    rows = [[k, f"`{v}`"] for k, v in packages.items()]
    return "\n".join(
        [
            "## Package versions",
            "",
            "The weights were trained with (`models/merged/train_info.json`):",
            "",
            table(["package", "version"], rows),
        ]
    )


def example_messages(native_tools: bool) -> list[dict]:
    """A two-hop conversation exactly as training renders one (qa_forge.chat.render)."""
    from qa_forge.chat.render import to_messages
    from qa_forge.core.records import Record, SubQuestion

    record = Record(
        id="example",
        src="example",
        question=EXAMPLE_QUESTION,
        multihop=True,
        sub_questions=[
            SubQuestion(
                question="In which country is Angkor Wat?",
                title="Angkor Wat",
                paragraph="Angkor Wat is a temple complex in Cambodia, built in the 12th century.",
                thought="The paragraph says Angkor Wat is in Cambodia.",
                answer="Angkor Wat is in Cambodia.",
                short_answer="Cambodia",
            ),
            SubQuestion(
                question="What is the capital of Cambodia?",
                title="Cambodia",
                paragraph="Cambodia is a country in Southeast Asia. Its capital and largest city is Phnom Penh.",
                thought="The paragraph names Phnom Penh as the capital of Cambodia.",
                answer="The capital of Cambodia is Phnom Penh.",
                short_answer="Phnom Penh",
            ),
        ],
        summary="Angkor Wat is in Cambodia, and the capital of Cambodia is Phnom Penh.",
        final_thought="The country is Cambodia, whose capital is Phnom Penh.",
        final_answer="The capital of the country where Angkor Wat is located is Phnom Penh.",
        short_answer="Phnom Penh",
    )
    return to_messages(record, native_tools)


def _usage(run: Run) -> str:
    messages = example_messages(run.native_tools)
    calls = (
        "OpenAI-style `tool_calls` (the chat template renders them)"
        if run.native_tools
        else ('text, `<tool_call>{"name": "retrieve", "arguments": {"query": ...}}</tool_call>` (the chat template has no tool calls)')
    )
    max_calls = run.params["evaluate"].get("max_calls")
    return "\n".join(
        [
            "## How to use it",
            "",
            (
                "The model expects the conversation it was trained on: the system prompt (`prompts/system.txt`) describing "
                f"`retrieve`, the question, then turns in which it calls `retrieve` as {calls}; you answer each call with a "
                "`tool` turn holding the retrieved paragraphs (`Title: text`, blank line between). A turn without a call is "
                "the final answer (`Summary:` / `Thought:` / `Answer:` / `Short answer:`). A two-hop conversation as "
                "training renders it:"
            ),
            "",
            "```json",
            json.dumps(messages, indent=1, ensure_ascii=False),
            "```",
            "",
            (
                "With qa-forge installed, over your own `.txt` files (the retriever embeds them; every retrieve call, the "
                "retrieved paragraphs and the answer are printed):"
            ),
            "",
            "```bash",
            "qa-forge ask --docs FOLDER --model models/merged",
            "```",
            "",
            (
                "Or the loop yourself (`qa_forge.chat.render` renders and parses the turns exactly as training did; "
                "`my_retriever` returns `[(title, paragraph), ...]`):"
            ),
            "",
            "```python",
            "import torch",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            "from qa_forge.chat.render import ToolCall, call_message, parse_reply, render_ids, start, supports_tools, tool_message",
            "",
            'tok = AutoTokenizer.from_pretrained("models/merged")',
            'model = AutoModelForCausalLM.from_pretrained("models/merged")',
            f"messages = start({json.dumps(EXAMPLE_QUESTION)})",
            f"for k in range({max_calls} + 1):  # evaluate.max_calls retrieve calls, then the answer",
            "    ids = render_ids(tok, messages, add_generation_prompt=True)",
            "    out = model.generate(torch.tensor([ids]), max_new_tokens=192, do_sample=False)",
            "    reply = parse_reply(tok.decode(out[0, len(ids):], skip_special_tokens=True))",
            "    if not isinstance(reply, ToolCall):",
            "        break  # a FinalAnswer (.answer, .short_answer), or None when the reply parses as neither",
            "    messages.append(call_message(reply.query, supports_tools(tok), k, content=reply.content))",
            "    messages.append(tool_message(my_retriever(reply.query), supports_tools(tok), k))",
            "```",
            "",
            (
                'On a GPU host, serve it with vLLM under its content-hash name (README, "Serving the trained model"): '
                "`vllm serve models/merged --served-model-name $(qa-forge served-name models/merged)`."
            ),
        ]
    )


def _limitations(run: Run) -> str:
    items = []
    ns = {name: block.get("n") for name, block in run.sets.items()}
    small = {k: n for k, n in ns.items() if isinstance(n, int) and n < SMALL_N}
    if small:
        items.append(
            "Small evaluation sets ("
            + ", ".join(f"{k}: n = {n}" for k, n in small.items())
            + "): the intervals are wide, and a difference whose interval contains 0 is not evidence of a change."
        )
    if not run.judge.get("enabled"):
        items.append(
            "No LLM judge (`judge.enabled: false`, the default): only string-match scores (containing accuracy, EM, F1), which miss correct answers worded differently."
        )
    kept = run.filter.get("kept")
    if isinstance(kept, int) and kept < 1000:
        items.append(f"Trained on {kept} records: a demonstration of the pipeline more than a useful QA model.")
    if run.base.hub_id is None:
        items.append("The base is not a hub model (a random tiny model in tests): the card names no `base_model`.")
    if any(s.local for s in run.trained_on):
        items.append("Sources read from local files carry their dataset's licence by assumption.")
    unverified = [s.info.name for s in run.trained_on if not s.info.verified]
    if unverified:
        items.append(f"Licence unverified for {', '.join(unverified)} (see the dataset card).")
    items += [
        "It answers from what `retrieve` returns: a retriever that misses the paragraph leads to a wrong or no answer.",
        "Answers the generator wrote were checked by rules (format, facts against the paragraph), not by people.",
        "English only." if run.cards.language == "en" else f"Trained and evaluated in one language ({run.cards.language}).",
    ]
    return "\n".join(["## Limitations", "", *[f"- {i}" for i in items]])


def _license(run: Run) -> str:
    lic = license_of(run)
    lines = ["## Licence", ""]
    if run.cards.license:
        lines.append(f"This model: {licenses.link(lic)} (`cards.license`).")
    elif lic == licenses.UNKNOWN:
        lines.append(f"This model: {licenses.UNKNOWN_TEXT} (the base model's licence is not listed in `cards.model_licenses`).")
    else:
        lines.append(f"This model: {licenses.link(lic)}, the base model's licence (`cards.license: null`).")
    sa = [s for s in run.trained_on if licenses.is_share_alike(s.info.license)]
    if sa:
        lines += [
            "",
            "Its training data includes share-alike sources ("
            + ", ".join(f"{s.info.name}: {licenses.name(s.info.license)}" for s in sa)
            + "). The training data must be shared under CC BY-SA (dataset card); whether model weights are an "
            "adaptation of their training data under CC BY-SA is not settled, so check before you release the model "
            "under another licence.",
        ]
    return "\n".join(lines)


def body(run: Run) -> str:
    parts = [
        _intro(run),
        _base(run),
        _data(run),
        _training(run),
        _evaluation(run),
        _packages(run),
        _usage(run),
        _limitations(run),
        _license(run),
    ]
    return "\n\n".join(parts) + "\n"


def model_card(run: Run) -> ModelCard:
    data = card_data(run)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body(run)}")
