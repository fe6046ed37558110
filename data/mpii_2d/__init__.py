"""mpii_2d dataset: MPII Human Pose person crops with 16 2D joints (trunk pretraining)."""
