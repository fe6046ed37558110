"""Default hyper-parameters: the paper's RPSM on Human3.6M (CVPR 2017, Sec. 4).

Every field can be overridden on the command line, e.g. `--config.model.num_stages=2`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = "h36m_clips"          # a TFDS builder in data/
  config.dataset.builder_config = ""          # "" = the builder's default config
  config.dataset.data_dir = ""                # "" = TFDS's default (~/tensorflow_datasets)
  config.dataset.manual_dir = ""              # where the user's raw release files are
  config.dataset.build_if_missing = False     # build the dataset before training if absent
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.dataset.root_joint = 0               # targets are relative to this joint (pelvis)
  # Training labels with every bone set to the training split's mean length, direction
  # kept, as the authors' code does; evaluation always scores the true poses.
  config.dataset.rescale_train_bones = False
  config.dataset.num_workers = 2              # threads decoding/augmenting frames
  # A training record that cannot be read: stop (naming dataset, split, record and file)
  # | skip (count it; its frame is replaced by the nearest readable frame of its sequence).
  config.dataset.corrupt_records = "stop"

  config.clip_length = 5                      # C frames per clip (paper: 5)
  config.clip_stride = 1                      # stored frames between training clip starts
  # Stored frames between frames of one clip: h36m_clips keeps every 5th raw frame
  # (10 fps) and the authors spaced clip frames 25 raw frames (0.5 s) apart.
  config.frame_step = 5

  config.augment = ml_collections.ConfigDict()
  config.augment.enabled = True
  config.augment.scale_min = 0.9              # random scale drawn per frame, then crop/pad
  config.augment.scale_max = 1.1
  config.augment.per_clip_probability = 1.0   # fraction of training clips augmented

  # With the trunk frozen: run it once on this many augmented renderings of every
  # training frame and train from those features (training/trunk_cache.py); 0 = run the
  # trunk on fresh frames every step.
  config.trunk_cache_copies = 0

  # --allocator=auto on a CPU without jemalloc: restart under glibc-tuned malloc
  # (cpu/xla_cpu.py) when True. It depends on the model: on a 2-core AVX-512 EPYC it made
  # configs/synthetic.py's train step ~20% faster, but the paper's 368 px train step 18%
  # slower (JAX 1.16-1.19 vs 1.43-1.45 frames/s untuned; jemalloc 1.6).
  config.cpu_glibc_tuned = False

  config.model = ml_collections.ConfigDict()
  config.model.num_stages = 3                 # K
  config.model.num_joints = 17                # P
  config.model.input_size = 368
  config.model.width = 1.0                    # channel multiplier of every convolution
  config.model.adaption = "paper"             # paper | official
  config.model.adaption_units = 1024
  config.model.temporal = "lstm"              # lstm | dense (seq_1 ablation)
  config.model.lstm_units = 1024
  # Initial bias of every LSTM forget gate (Flax's and PyTorch's: 0; 1 keeps the cell state
  # through a clip while training starts).
  config.model.lstm_forget_bias = 0.0
  config.model.share_2d = False               # one set of 2D layers for all stages
  # Stage k > 1 predicts a correction to stage k-1's pose (read-out starting at zero);
  # not in the paper: an option for when later stages do not refine (README Ablations).
  config.model.residual_stages = False
  config.model.remat_trunk = False
  config.model.dtype = "float32"              # compute dtype: float32 | bfloat16
  # Convolutions (rpsm_jax/convolution.py): auto (CPUs: oneDNN where libdnnl-dev is
  # installed, Winograd F(m,3) for >= 128-channel 3x3 layers; GPUs and TPUs: lax.conv) |
  # direct (lax.conv) | winograd (every float32 3x3/1 layer) | onednn (CPU only).
  config.model.conv_algorithm = "auto"
  config.model.winograd_tile = 0              # 0 (by image size) | 2 | 4
  # Trunk start: "" (random), "vgg19:<torchvision VGG-19 state_dict file>" (conv1_1 to
  # conv4_2) or "checkpoint:<workdir>" (the trunk of another run); optionally frozen, as
  # the authors' released recipe froze their pretrained trunk.
  config.model.trunk_init = ""
  config.model.freeze_trunk = False
  config.model.initializer = "he"             # he | xavier (paper text; see models/layers)

  config.loss_stage_weights = ()              # alpha_k; () = 1 for every stage

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "adam_l2"           # adam_l2 (coupled L2, authors) | adamw | adam
  config.optimizer.learning_rate = 1e-3       # paper: base lr 1e-3
  config.optimizer.weight_decay = 1e-4        # paper: decay 1e-4
  config.optimizer.schedule = "constant"      # constant | warmup_cosine
  config.optimizer.warmup_steps = 0
  config.optimizer.end_learning_rate_factor = 0.0  # cosine ends at lr * this
  config.optimizer.grad_clip_norm = 0.0       # 0 = no clipping
  # The trunk (params['trunk']) learns at this times the rate: < 1 fine-tunes a pretrained
  # trunk gently (config.model.trunk_init); ignored when config.model.freeze_trunk.
  config.optimizer.trunk_learning_rate_factor = 1.0

  config.batch_size = 8                       # global, in clips
  # global: jit over a mesh of all processes' devices (batch split, state replicated);
  # pmap: jax.pmap over each host's devices, pmean across all (rpsm_jax.training.train).
  config.parallelism = "global"
  config.num_train_steps = 200_000
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint_every_steps = 5_000
  config.keep_checkpoints = 3
  config.eval_batch_size = 8                  # clips per evaluation batch
  config.eval_max_clips = 0                   # periodic evals: 0 = every clip; the final
                                              # evaluation always scores every clip
  # --mode=pretrain2d: the trunk on MPII heatmaps (data/mpii_2d); uses config.model's
  # width, input size and dtype, config.augment, config.seed and the logging intervals.
  # --mode=train runs it first as phase 1 of the recipe (training/recipe.py) when
  # `enabled`, into <workdir>/pretrain2d (or `workdir`), then 3D from its trunk, kept
  # `frozen` (the authors' released recipe) or trained on (`finetune`).
  config.pretrain2d = ml_collections.ConfigDict()
  config.pretrain2d.enabled = False
  config.pretrain2d.trunk = "frozen"          # frozen | finetune
  config.pretrain2d.workdir = ""              # "" = <workdir>/pretrain2d
  config.pretrain2d.eval_max_examples = 0     # final 2D check: 0 = the whole eval split
  config.pretrain2d.dataset = ml_collections.ConfigDict()
  config.pretrain2d.dataset.name = "mpii_2d"
  config.pretrain2d.dataset.builder_config = ""
  config.pretrain2d.dataset.data_dir = ""
  config.pretrain2d.dataset.manual_dir = ""
  config.pretrain2d.dataset.build_if_missing = False
  config.pretrain2d.dataset.train_split = "train"
  config.pretrain2d.dataset.eval_split = "validation"
  config.pretrain2d.batch_size = 16
  config.pretrain2d.num_train_steps = 100_000
  config.pretrain2d.sigma = 7.0               # heatmap Gaussian, input pixels (CPM)
  config.pretrain2d.optimizer = ml_collections.ConfigDict(
      dict(config.optimizer.to_dict(), learning_rate=1e-4, weight_decay=5e-4))
  config.nonfinite_policy = "stop"            # NaN/Inf loss or gradients: stop | skip
  # Restarts (training/checkpoints.py, workdir.py): start again from step 0 when the
  # workdir's checkpoints are all damaged or gone (they are kept aside, never replaced);
  # resume although the config changes the model, the data or the seed.
  config.allow_restart_from_scratch = False
  config.allow_config_changes = False
  # A step whose update exceeds this x the parameters' L2 norm counts as non-finite (is not
  # applied): Adam's steps are ~lr x sqrt(#params), far below the norm; 0 = no bound.
  config.max_update_ratio = 0.5
  return config
