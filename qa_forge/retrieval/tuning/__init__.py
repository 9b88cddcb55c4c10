"""Fine-tuning the dense retriever on our own multi-hop data (issue 14, LLM-Embedder style).

- `pairs`: (query, positive paragraph) pairs from the filtered records, deduplicated, a held-out
  split by record id, and their overlap with the evaluation paragraphs;
- `mining`: hard negatives per query from BM25 (bm25s) and from the current dense retriever;
- `sampler`: a batch sampler that keeps in-batch negatives free of a query's own positives;
- `train`: MultipleNegativesRankingLoss through SentenceTransformerTrainer, the retriever's
  query/passage prefixes kept.
- `params`: the training run's params (TuneParams), importable without torch;
- `run`: the train_retriever stage's work (the `retriever` params section, the switch, the tuned
  model folder and the untuned vs tuned report); `retrieve` and evaluate pick the tuned folder with
  qa_forge.retrieval.retriever.effective_retriever.

The ranking metrics of the report (MRR@10, NDCG@10, recall@k, all@k) are in
qa_forge.retrieval.metrics, beside the retrieve stage's.
"""
