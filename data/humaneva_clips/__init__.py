"""humaneva_clips dataset: HumanEva-I frames, person crops and 3D/2D poses (14 joints)."""
