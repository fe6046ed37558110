"""Joint layouts shared by the datasets, the metrics and the visualisation."""

# Human3.6M 17-joint order as VideoPose3D and mmpose use it (RPSM_REFERENCE.md).
H36M_JOINTS = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax",
    "Neck", "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
)
H36M_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
# Indices kept from the 32 joints of the raw Human3.6M release.
H36M_FROM_32 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
H36M_ROOT = 0

# The 15 canonical Human3.6M actions.
H36M_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing",
    "Purchases", "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking",
    "WalkTogether",
)

# HumanEva-I, 14 joints as in the RPSM paper. The root for root-relative targets is the
# midpoint of the hips (HumanEva has no pelvis joint); see data/humaneva_clips/README.md.
HUMANEVA_JOINTS = (
    "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist", "RHip", "RKnee",
    "RAnkle", "LHip", "LKnee", "LAnkle", "HeadTop", "Neck",
)
HUMANEVA_PARENTS = (13, 0, 1, 13, 3, 4, 13, 6, 7, 13, 9, 10, 13, -1)
# The paper's three HumanEva-I actions (the release spells them Walking, Jog, Box).
HUMANEVA_ACTIONS = ("Walking", "Jogging", "Boxing")

# MPII Human Pose, 16 joints in the order of the dataset's annotations (and of the JSON files
# of the HRNet / simple-baselines code): the 2D pretraining data of the trunk.
MPII_JOINTS = (
    "RAnkle", "RKnee", "RHip", "LHip", "LKnee", "LAnkle", "Pelvis", "Thorax", "UpperNeck",
    "HeadTop", "RWrist", "RElbow", "RShoulder", "LShoulder", "LElbow", "LWrist",
)
MPII_PARENTS = (1, 2, 6, 6, 3, 4, -1, 6, 7, 8, 11, 12, 7, 7, 13, 14)


def names(num_joints: int) -> tuple[str, ...]:
  """The joint layout of a model with `num_joints` outputs (Human3.6M 17 or HumanEva 14)."""
  layouts = {len(H36M_JOINTS): H36M_JOINTS, len(HUMANEVA_JOINTS): HUMANEVA_JOINTS}
  return layouts.get(num_joints, tuple(f"joint_{i}" for i in range(num_joints)))


def parents(num_joints: int) -> tuple[int, ...]:
  """Each joint's parent in the skeleton of `names(num_joints)` (-1: none)."""
  layouts = {len(H36M_PARENTS): H36M_PARENTS, len(HUMANEVA_PARENTS): HUMANEVA_PARENTS}
  return layouts.get(num_joints, (-1,) * num_joints)


def is_left(name: str) -> bool:
  return name.startswith("L")


def is_right(name: str) -> bool:
  return name.startswith("R") and name != "Root"
