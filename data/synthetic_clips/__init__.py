"""synthetic_clips dataset."""
