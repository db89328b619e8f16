"""Evaluation harness: question sets spoken to the companion in real time, the paper's latency,
fact scoring, MT-Bench judging and reports (`kame-desktop eval`)."""
