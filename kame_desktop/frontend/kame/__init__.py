"""The KAME front-end: Moshi's LM plus one oracle embedding, streamed frame by frame."""
