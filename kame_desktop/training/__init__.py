"""Training: the paper's recipe for teaching the front-end to use the oracle (spec §4).

Data half: `prepare` (dialogues into the canonical layout) → `simulate_oracle` (LLM predictions
at 0.5 s events) → `tokenize` (Mimi codes, frame-aligned text, oracle events → Parquet shards).
Model half: `dataset` (examples, collation-time oracle augmentation) → `finetune` (accelerate)
→ `export` (a checkpoint in the released KAME layout).

Nothing here imports Qt, the session or the GUI; torch and friends load inside the functions
that need them, so `kame-desktop --help` stays light.
"""
