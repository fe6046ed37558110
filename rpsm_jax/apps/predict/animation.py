"""The animation predict writes: each input frame with its crop beside the 3D skeletons."""

import cv2
import numpy as np
from PIL import Image

from rpsm_jax.evaluation import visualize


def compose_frame(frame_rgb: np.ndarray, crop_box: np.ndarray, person_box: np.ndarray,
                  poses_mm: np.ndarray, stage_ids, names, parents, height: int,
                  index: int) -> np.ndarray:
  """One animation frame (BGR): the input with its crop box, then one panel per stage.

  poses_mm: (K', P, 3) root-relative mm of the stages in `stage_ids`.
  """
  image = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
  t = max(1, image.shape[0] // 200)
  if np.all(np.isfinite(person_box)):
    cv2.rectangle(image, tuple(int(round(v)) for v in person_box[:2]),
                  tuple(int(round(v)) for v in person_box[2:]), (0, 200, 255), t)
  cv2.rectangle(image, tuple(int(v) for v in crop_box[:2]),
                tuple(int(v) for v in crop_box[2:]), (0, 200, 0), t)
  image = visualize.fit_height(image, height)
  label = f"frame {index}" + ("" if np.all(np.isfinite(person_box)) else
                              " (centre crop: no boxes)")
  visualize.put_text(image, label, (4, 4), scale=0.45, colour=(255, 255, 255))
  panels = [visualize.pose_panel(poses_mm[j], parents, names, height, title=f"stage {s}")
            for j, s in enumerate(stage_ids)]
  for panel in panels:
    panel[:, 0] = (200, 200, 200)   # a separator line
  return np.concatenate([image] + panels, axis=1)


class AnimationWriter:
  """Writes BGR frames to MP4 ('mp4v') or GIF; every frame is fitted to the first's size."""

  def __init__(self, path: str, fps: float, height: int):
    self.path, self.fps, self.height = path, fps, height
    self._size = None
    self._video = None
    self._gif = []

  def add(self, frame: np.ndarray) -> None:
    if self._size is None:
      h, w = frame.shape[:2]
      self._size = (w + w % 2, h + h % 2)    # encoders want even sides
      if self.path.endswith(".mp4"):
        self._video = cv2.VideoWriter(self.path, cv2.VideoWriter_fourcc(*"mp4v"),
                                      self.fps, self._size)
        if not self._video.isOpened():
          raise OSError(f"cannot write {self.path}: OpenCV has no 'mp4v' encoder here; "
                        "use --animation=gif")
    frame = _fit_into(frame, *self._size)
    if self._video is not None:
      self._video.write(frame)
    else:
      self._gif.append(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))

  def close(self) -> None:
    if self._video is not None:
      self._video.release()
    elif self._gif:
      self._gif[0].save(self.path, save_all=True, append_images=self._gif[1:],
                        duration=int(round(1000 / self.fps)), loop=0)
      self._gif = []


def _fit_into(image: np.ndarray, width: int, height: int) -> np.ndarray:
  """Letterboxes an image into width x height (frames of a folder may differ in size)."""
  h, w = image.shape[:2]
  if (w, h) == (width, height):
    return image
  s = min(width / w, height / h)
  nw, nh = max(1, int(w * s)), max(1, int(h * s))
  out = np.zeros((height, width, 3), np.uint8)
  out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
  return out
