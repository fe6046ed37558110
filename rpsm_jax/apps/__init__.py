"""Applications of a trained run: predict (video -> 3D poses), streaming, export."""
