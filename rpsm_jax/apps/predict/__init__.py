r"""Inference on a video or a folder of frames: 3D poses (npz, JSON) and an animation.

  python -m rpsm_jax.predict --workdir=<trained run> --input=<video or folder of frames> \
      --output=<dir> [--boxes=<per-frame person boxes>] [--checkpoint_step=N | --best] \
      [--stages=all|last] [--max_frames=N] [--frame_step=N] [--streaming] \
      [--animation=mp4|gif|none]

Frames are read one at a time (videos with cv2.VideoCapture; folders as the image files
in natural sort order, frame_2 before frame_10), converted to RGB, cropped around the
person and resized to the run's input size, then run through the model as evaluation does:
non-overlapping clips of config.clip_length frames, the LSTM state reset for every clip
(the last clip padded by repeating its final frame). --frame_step=N spaces a clip's
frames N input frames apart (match the training spacing: config.frame_step stored frames,
0.5 s for the shipped configs); the N interleaved sub-sequences then run as clips of their
own, as evaluation cuts them. --streaming carries the LSTM state across clips instead (per
sub-sequence), the model then sees the video as one long causal sequence.

Crops. With --boxes, each frame's box [x0, y0, x1, y1] (pixels of that frame; pixel j spans
[j, j + 1]) has its short side grown to a square about its centre, no margin, zero-padded
where it leaves the image: the crop the authors trained on. Without boxes the largest
centred square of each frame is used, which only works when the person fills the frame's
middle; the log and poses.json say which crop was used.

Boxes file, one row per input frame (the first N rows with --max_frames):
  .json  [[x0, y0, x1, y1], ...] or {"boxes": [[x0, y0, x1, y1], ...]}
  .csv   one "x0,y0,x1,y1" line per frame (commas or spaces); an optional header line and
         lines starting with '#' are skipped
  .npy   a float array of shape (N, 4)

Outputs in --output:
  poses.npz   poses_mm (F, K', P, 3) float32 for the F frames and the K' stages written
              (all K, or the last with --stages=last), stages (K',) 1-based, crop_boxes
              (F, 4), person_boxes (F, 4) (NaN without --boxes), frame_index (F,),
              joint_names (P,), parents (P,), checkpoint_step
  poses.json  metadata (units, coordinates, joint names in order, crop, checkpoint, ...)
              and, per frame, the crop box and each stage's pose
  poses.mp4   (or poses.gif) the input frame with its crop beside the 3D skeleton of each
              stage (--stages=all) or of the final stage (--stages=last)
Poses are in mm, root-relative (joint 0, the pelvis, at 0) in the camera frame: x right,
y down, z away from the camera.

Modules: frames (reading videos and folders), boxes (boxes files), prediction (`predict`,
the clip runner, poses.npz / poses.json), animation (the rendered frames and their
writer), cli (flags, `run`).
"""

from rpsm_jax.apps.predict.boxes import load_boxes
from rpsm_jax.apps.predict.cli import run
from rpsm_jax.apps.predict.frames import FolderFrames, InputError, VideoFrames, open_frames
from rpsm_jax.apps.predict.prediction import predict

__all__ = ["FolderFrames", "InputError", "VideoFrames", "load_boxes", "open_frames",
           "predict", "run"]
