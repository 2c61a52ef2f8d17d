"""Teachers (dual-stream open_clip, single-stream cross-encoder), the student, tokenizers."""
