"""Model and dataset cards (the cards stage): a Hugging Face model card for the released model and a
dataset card for the filtered data, written from the run's params and metrics with huggingface_hub's
ModelCard / DatasetCard, so the metadata block is the hub's own format and parses back.

- `licenses`: licence ids, their names and links, share-alike terms carried to derived data;
- `run`: the run as the cards see it (the base and generator models, the sources used, counts);
- `model`, `dataset`: the two cards.
"""
