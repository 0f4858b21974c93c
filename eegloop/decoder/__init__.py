"""The decoder: preprocessing, CLIP teacher, distilled residual CNN, honest evaluation.

Public API
----------
- :func:`quick_train` (:mod:`.quicktrain`) — train the subject's student on all its epochs (whole
  blocks held out for early stopping), save it, register it in the database.
- :func:`load_decoder` (:mod:`.modelio`) — an :class:`OnlineDecoder` that turns one epoch into
  class probabilities with exactly the training preprocessing.
- :func:`evaluate` (:mod:`.evaluation`) — cross-validation by block/run.
- :func:`train_encoder` / :func:`load_encoder` (:mod:`.encodertrain`) — the EEG -> CLIP-embedding encoder
  (:mod:`.encoder`) for zero-shot retrieval (:func:`.zeroshot.zero_shot_evaluate`) and the retrieve/embedding
  feedback modes.

Where things live: the decoding methods (:mod:`.methods`, one registry), honest folds (:mod:`.folds`),
scores and chance (:mod:`.scoring`), artifact rejection (:mod:`.rejection`), fitting one method
(:mod:`.fitting`), model selection (:mod:`.selection`), the training epochs (:mod:`.trainingset`), the
networks (:mod:`.models`, :mod:`.training`) and the pipelines (:mod:`.pipelines`).
"""
from .encodertrain import load_encoder, stimulus_embeddings_for, train_encoder
from .evaluation import EvalReport, NoHonestFoldError, evaluate
from .methods import method_names
from .modelio import OnlineDecoder, TrainedModel, check_epoch_length, load_decoder, read_model_meta, save_model
from .preprocessing import Preprocessor
from .quicktrain import heldout_line, heldout_tuning, honest_estimate, quick_train
from .teacher import fit_teacher
from .trainingset import load_training_epochs, subject_protocol

__all__ = ["quick_train", "train_encoder", "load_encoder", "load_decoder", "OnlineDecoder", "TrainedModel", "evaluate",
           "EvalReport", "honest_estimate", "NoHonestFoldError", "Preprocessor", "fit_teacher", "subject_protocol",
           "save_model", "heldout_line", "heldout_tuning", "check_epoch_length", "read_model_meta",
           "stimulus_embeddings_for", "load_training_epochs", "method_names"]
