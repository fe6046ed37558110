"""h36m_clips dataset: Human3.6M frames, person crops and 3D/2D poses."""
