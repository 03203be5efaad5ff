"""Every sentence the web app shows, in one table (one place to edit wording or translate)."""

from __future__ import annotations

from ..events import format_seconds
from .safety_text import SAFETY_TEXT

TEXT: dict[str, str] = {
    # page
    "title": "tlgui: train an image or text classifier in your browser",
    "intro": "Pick a dataset, choose a pretrained backbone, press **Train**, watch it learn, then try the model "
             "and download it. Nothing to install, no code.",
    "step_data": "1 · Data",
    "step_model": "2 · Model",
    "step_train": "3 · Train",
    "step_results": "4 · Results",
    "step_try": "5 · Try it and take it home",
    "step_runs": "Your earlier runs",
    # data
    "example_label": "Built-in example",
    "upload_label": "…or upload your own dataset (.zip of class folders, or a .csv/.tsv table)",
    "data_help": "A zip of folders named after the classes (`cat/1.jpg`, `dog/2.jpg`), a zip with a `labels.csv` "
                 "(image, label), or a CSV of texts with a label column. The zip is read in place, never unpacked.",
    "summary_label": "What was read",
    "counts_label": "Examples per class",
    "samples_label": "A few examples of each class",
    "text_samples_label": "A few examples of each class",
    "summary_head": "**{name}** ({origin}) · {task} classification · {n_classes} classes · {used} {kind} used · "
                    "{skipped} skipped",
    "origin_example": "built-in example",
    "origin_upload": "your upload",
    "origin_server": "server folder",
    "server_label": "…or a dataset on this server (a folder or table inside TLGUI_DATA_DIRS, read in place)",
    "summary_skipped": "Skipped {n} file(s): {reasons}.",
    "summary_skipped_file": "- `{file}`: {reason}",
    "summary_more_skipped": "- …and {n} more",
    "summary_warning": "**Warning:** {text}",
    "summary_ok": "Ready to train.",
    "no_dataset": "choose a built-in example or upload a dataset first",
    "task_image": "image",
    "task_text": "text",
    "kind_image": "images",
    "kind_text": "texts",
    "reading": "Reading the dataset…",
    # model
    "backbones_label": "Backbones (auto, or pick one; pick two or more to fuse them)",
    "backbones_info": "Pretrained networks that turn each example into features; the list matches your data. "
                      "auto tries every installed one, alone and the best few joined, and keeps the best.",
    "backbone_auto": "auto: the best of the installed ones, alone or joined",
    "table_label": "Compare backbones (time is an estimate for this dataset on this machine)",
    "col_backbone": "backbone",
    "col_params": "params",
    "col_input": "input",
    "col_offline": "weights",
    "col_time": "est. time",
    "offline_yes": "installed",
    "offline_no": "downloaded on first use",
    "estimate": "Estimated time for this run: **{time}** on this machine ({device}). This is a rough estimate "
                "from a timed test batch, scaled by each backbone's size and the dataset's.",
    "estimate_pending": "Measuring this machine's speed for a time estimate…",
    "estimate_unknown": "unknown",
    "fusion_label": "Fusion (how the backbones' features are combined)",
    "fusion_single": "One backbone: nothing to fuse. Pick two or more to combine them.",
    "fusion_auto": "With **auto** backbones, each backbone is tried alone, then the best two, three… joined this way; "
                   "the best on held-out data stays.",
    "fusion_concat": "**concat**: put the features side by side; simple and strong.",
    "fusion_mean": "**mean**: project each backbone's features to one width and average them.",
    "fusion_weighted": "**weighted**: like mean, but learns how much each backbone counts (shown in the results).",
    "fusion_product": "**product**: multiply the projected features; lets backbones gate each other.",
    "fusion_conv": "**conv**: a small learned convolution across the backbones' projected features.",
    "freeze_label": "Freeze (which pretrained layers stay fixed)",
    "freeze_all": "**all**: fastest. The pretrained features are used as they are; only the new classifier learns, "
                  "and the features are computed once.",
    "freeze_none": "**none**: every layer trains. Slowest; worth it with thousands of examples that look unlike "
                   "everyday photos.",
    "freeze_n": "**{n}**: the first {n} of {total} stages stay fixed (they see edges and textures that suit most "
                "data); the later stages and the classifier train.",
    "freeze_auto_choice": "auto: best in the time I give it",
    "freeze_auto": "**auto**: fits the classifier on the fixed pretrained features to convergence (seconds; with "
                   "auto backbones, for each one and the best few joined), then fine-tunes every layer from it (LP-FT) "
                   "in the time the budget has left, with fewer epochs or pixels where that fits, and keeps whichever "
                   "scores better on validation.",
    "auto_budget_more": " With these settings fine-tuning would take about {time}: a time budget of {seconds} s or "
                        "more adds it to auto.",
    "auto_budget_fits": " With these settings fine-tuning (about {time}) fits the time budget: auto tries it.",
    "budget_label": "Time budget for auto (seconds; empty: 60 on a CPU, 600 on a GPU)",
    "max_length_label": "Tokens kept per text (empty or 0: from the data, up to the encoder's limit)",
    "class_weights_label": "Class weights (for uneven classes)",
    "class_weights_auto": "auto (on at 3:1 or more)",
    "class_weights_on": "on",
    "class_weights_off": "off",
    "folds_label": "Cross-validation folds for a frozen classifier (0: one validation share)",
    "lr_find_btn": "Find a learning rate",
    "lr_find_done": "Suggested learning rate **{lr}** (the steepest fall of the loss), filled in above.",
    "lr_find_frozen": " A frozen classifier is fitted to convergence without a learning rate; the rate matters "
                      "when layers train (none, a number, or auto's fine-tuning).",
    "lr_find_label": "Loss by learning rate",
    "start_label": "Start from (what is transferred)",
    "start_pretrained": "pretrained weights",
    "start_scratch": "no pretraining",
    "start_run": "one of my earlier models",
    "start_upload": "an uploaded model.zip",
    "start_help_pretrained": "The backbones' pretrained weights are the starting point: the usual transfer learning.",
    "start_help_scratch": "The same architectures with random weights, everything trained: the baseline that shows "
                          "what pretraining buys (it needs many more examples and epochs).",
    "start_help_run": "An earlier model of yours is the starting point, with its backbones, fusion and image size. "
                      "Same classes: training goes on from it. Other classes: its backbone stays, with a new classifier.",
    "start_help_upload": "A model.zip made by tlgui is the starting point, with its backbones, fusion and image size. "
                         "Same classes: training goes on from it. Other classes: its backbone stays, with a new classifier.",
    "init_run_label": "Earlier model",
    "init_upload_label": "A tlgui model.zip",
    "init_pick_run": "choose one of your earlier models to start from (a run that kept a model)",
    "init_pick_upload": "upload the model.zip to start from first",
    "init_foreign_encoder": "that model was built on an encoder ({name}) that is not on this server: start from "
                            "pretrained weights instead",
    "recipes": "Recipes (reuse the settings of a run on any dataset)",
    "recipe_pick_label": "A saved recipe, or the settings of an earlier run",
    "recipe_apply": "Apply",
    "recipe_name_label": "Save the settings above as a recipe named",
    "recipe_save": "Save recipe",
    "recipe_saved": "Saved the recipe **{name}**.",
    "recipe_applied": "Applied: the settings above are the recipe's. Press **Train** to use them on this dataset.",
    "recipe_pick_first": "choose a recipe first",
    "recipe_choice": "recipe: {name}",
    "recipe_of_run": "settings of run {label}",
    "recipe_wrong_task": "this recipe's backbones ({backbones}) do not work on {data}: pick a recipe made for {data}",
    "advanced": "Advanced settings",
    "export_label": "Also put in model.zip",
    "export_info": "Files that run the model without tlgui (with onnxruntime, or with PyTorch alone for pictures), "
                   "each checked against the model on the validation data.",
    "export_onnx": "ONNX (model.onnx)",
    "export_onnx-int8": "ONNX int8 (model.int8.onnx: about 3.5x smaller)",
    "export_torchscript": "TorchScript (model.torchscript.pt)",
    "epochs_label": "Epochs (passes over the training data)",
    "lr_label": "Learning rate",
    "batch_label": "Batch size",
    "image_size_label": "Image size (smaller trains faster)",
    "image_size_native": "native ({size} px)",
    "image_size_native_plain": "native",
    "val_label": "Validation share (held out to measure accuracy)",
    "augment_label": "Augmentation (random flips and crops)",
    "augment_auto": "auto: on when backbone layers train",
    "augment_on": "on",
    "augment_off": "off",
    "patience_label": "Early stopping: epochs without improvement before stopping (0: off)",
    "seed_label": "Seed (same seed, same split and result)",
    "cli_label": "The same run from the command line",
    "cli_warning": "# Warning: {reason}\n# (the command appears here once the settings can run)",
    "settings_warning": "**Warning:** {reason}",
    "no_backbones": "no {task} backbone is installed: see `python -m tlgui backbones`",
    "pick_backbone": "pick at least one backbone",
    "setting_not_a_number": "a setting is empty or not a number: check the advanced settings",
    "gpus_dataset_unknown": "the dataset of this run is unknown: load it again, then press Train",
    "recipe_name_needed": "give the recipe a name (letters or digits) first",
    "recipe_gone": "that recipe is gone or damaged: save it again",
    "wrong_task": "{name} works on {kind}, but the dataset holds {data}: choose a backbone for {data}",
    # model: from the Hugging Face Hub
    "hub_title": "From the Hugging Face Hub",
    "hub_id_label": "Model id (OWNER/NAME): a timm model, a transformers vision model, or a sentence-transformers "
                    "model for texts",
    "hub_check": "Check",
    "hub_id_first": "type a model id first, for example facebook/dinov2-small",
    "hub_too_big": "{name} has {params}M parameters, more than this server offers ({most}M at most): choose a "
                   "smaller model",
    "hub_ok": "**{name}** · {source} · {params} M parameters · input {size} · {stages} stages · {width} features · "
              "weights in the cache. Added to the backbones (remove the others there to use it alone).",
    "hub_recommended": "Recommended (time: one forward pass per input on 2 CPU cores, batch 16):",
    "hub_table_head": "| model | for | params | input | CPU time | |",
    # train
    "train_btn": "Train",
    "stop_btn": "Stop",
    "resume_btn": "Resume",
    "status_idle": "Press **Train** to start; the estimate above says about how long it will take.",
    "status_queued": "**Queued**: {ahead} run(s) ahead of yours. This machine trains {limit} run(s) at a time; "
                     "yours starts as soon as one ends.",
    "status_starting": "**Starting**: building the model…",
    "status_preparing": "**Preparing**: {what} {done}/{total}",
    "status_whole": " (the whole run: about {time})",
    "status_training": "**Training**: epoch {epoch}/{epochs}{eta}",
    "status_eta": ", about {time} left",
    "pace_left": "{time} left",
    "all_gpus": "Train on all {n} GPUs (torchrun, one process per GPU)",
    "status_finished": "**Finished** in {elapsed}: validation accuracy {accuracy}, macro F1 {f1} (best epoch {best} of {ran}).",
    "status_finished_noval": "**Finished** in {elapsed} after {ran} epoch(s) (no validation share, so no accuracy).",
    "status_fitted": "**Finished** in {elapsed}: validation accuracy {accuracy}, macro F1 {f1} (classifier "
                     "fitted in {steps} steps).",
    "status_fitted_noval": "**Finished** in {elapsed}: classifier fitted in {steps} steps (no validation share, so "
                           "no accuracy).",
    "status_folds": " {k}-fold cross-validation: {mean} ± {spread}.",
    "status_recipe": " {sentence}.",
    "leaderboard_label": "What auto tried (accuracy on held-out data; the kept one is ticked)",
    "col_candidate": "candidate",
    "col_heldout": "accuracy",
    "col_fit_s": "fit (s)",
    "status_stopped": "**Stopped** after epoch {ran}: the best model so far (epoch {best}) was kept.",
    "status_stopped_empty": "**Stopped** before the first epoch ended: no model was kept.",
    "status_error": "**Error:** {reason}",
    "status_interrupted": "**Interrupted**: the server restarted during this run. Press **Resume** to go on from "
                          "epoch {epoch}.",
    "status_interrupted_empty": "**Interrupted**: the server restarted before the first epoch ended. Press **Resume** "
                                "to start this run again.",
    "status_stopped_more": " Press **Resume** to train on.",
    "resume_not_now": "only a stopped or interrupted run can resume",
    "resume_no_data": "the dataset of this run is gone from the server: load it again and press Train",
    "status_stopping": "**Stopping**: finishing the current batch and keeping the best model…",
    "status_no_run": "no run is going: press Train first",
    "status_run_missing": "that run is not one of yours, or it was deleted",
    "loss_label": "Learning curves (loss and accuracy by epoch)",
    # results
    "results_head": "Validation accuracy **{accuracy}** · macro F1 **{f1}** on {count} held-out examples · best epoch {best}",
    "results_fit": "Validation accuracy **{accuracy}** · macro F1 **{f1}** on {count} held-out examples · "
                   "classifier fitted in {steps} steps",
    "results_folds": " · {k}-fold accuracy **{mean} ± {spread}** (the per-class table counts every example, each "
                     "scored by a classifier that never saw it)",
    "results_noval": "No validation share was held out, so there are no scores. Train again with a validation share above 0.",
    "confusion_label": "Confusion matrix (rows: true class, columns: predicted)",
    "per_class_label": "Per class",
    "col_class": "class",
    "col_precision": "precision",
    "col_recall": "recall",
    "col_f1": "F1",
    "col_support": "examples",
    "mistakes_label": "Misclassified validation examples (true → predicted)",
    "mistake_caption": "{true} → {predicted}",
    "col_text": "text",
    "col_true": "true",
    "col_predicted": "predicted",
    "fusion_weights_label": "How much each backbone counted (weighted fusion)",
    # try
    "try_wait": "Train a model (or open an earlier run) to try it here.",
    "predict_image_label": "A picture to classify",
    "predict_text_label": "A text to classify",
    "predict_btn": "Classify",
    "predict_output_label": "Top classes",
    "predict_empty": "give a picture or a text to classify first",
    "download_btn": "Download model.zip",
    "snippet_label": "Use it in Python",
    # runs
    "runs_empty": "No runs yet. Each run you start is kept here, also after a restart; only you see yours.",
    "runs_pick_label": "Run",
    "open_btn": "Open",
    "delete_btn": "Delete",
    "compare_label": "Compare runs (validation curves)",
    "compare_plot_label": "Validation loss and accuracy",
    "col_run": "run",
    "col_status": "status",
    "col_accuracy": "val accuracy",
    "col_transfer": "transfer",
    "col_macro_f1": "macro F1",
    "col_time_taken": "time",
    "deleted": "Deleted {label}.",
    "delete_running": "this run is still going: stop it before deleting it",
    "state_queued": "queued",
    "state_running": "training",
    "state_finished": "finished",
    "state_stopped": "stopped",
    "state_failed": "error",
    "state_interrupted": "interrupted",
    # errors
    "unexpected": "something went wrong ({kind}): {detail}. The server log has the details.",
    # plots
    "plot_loss": "Loss",
    "plot_accuracy": "Accuracy",
    "plot_epoch": "epoch",
    "plot_fit_step": "fit step (then fine-tuning epochs)",
    "plot_lr": "learning rate",
    "plot_train": "training",
    "plot_val": "validation",
    "plot_waiting": "waiting for the first epoch…",
    "plot_predicted": "predicted",
    "plot_true": "true",
    "plot_count": "examples",
    # pretrain
    "pretrain": "Optional: pretrain your own encoder on unlabelled pictures",
    "pretrain_help": "Teach a small network your kind of pictures without any labels: an **AutoEncoder** learns to "
                     "redraw each picture from a short code, a **VAE** also learns to draw new ones. Its encoder then "
                     "shows up among the backbones in step 2 as *my encoder*, for you only. It learns from the "
                     "dataset of step 1 (labels ignored) or, if you upload one here, from a zip of pictures in any "
                     "layout.",
    "pretrain_upload_label": "…or your own pictures: a .zip in any layout, no labels needed",
    "pretrain_method_label": "Method",
    "pretrain_method_autoencoder": "AutoEncoder",
    "pretrain_method_vae": "VAE",
    "pretrain_size_label": "Image size (smaller learns faster)",
    "pretrain_btn": "Pretrain",
    "pretrain_idle": "Press **Pretrain** to start. The encoder is kept, also after a restart, and only you see it.",
    "pretrain_finished": "**Finished** in {elapsed}: loss {loss} (best epoch {best} of {ran}). Pick **{name}** "
                         "among the backbones in step 2 (programs: `{value}`).",
    "pretrain_stopped": "**Stopped** after epoch {ran}: the best encoder so far (epoch {best}) was kept as "
                        "**{name}** among the backbones in step 2 (programs: `{value}`).",
    "pretrain_stopped_empty": "**Stopped** before the first epoch ended: no encoder was kept.",
    "pretrain_interrupted": "**Interrupted**: the server restarted during this run. Press **Pretrain** to start again.",
    "pretrain_no_run": "no pretraining is going: press Pretrain first",
    "pretrain_plot_label": "Pretraining loss by epoch (lower: the pictures are redrawn better)",
    "pretrain_sheet_label": "Pictures beside their reconstructions (a VAE adds a row of pictures it drew itself)",
    "pretrain_download": "Download encoder.zip",
    "pretrain_needs_pictures": "pretraining needs pictures, but the dataset of step 1 holds texts: upload a zip of "
                               "pictures here",
    "pretrain_bad_setting": "the epochs or the image size is empty or not a number",
    "method_autoencoder": "autoencoder",
    "method_vae": "VAE",
    "my_encoder": "my encoder: {label}",
    "my_encoder_short": "my {method} #{number}",
    "encoder_missing": "that pretraining run kept no encoder (it is still going, or it stopped or failed early)",
    "backbone_not_a_name": "a backbone is a name from the list (an own encoder: encoder:<run id>), never a file path",
    # building a dataset in the page
    "origin_built": "built in the page",
    "builder": "Build or extend a dataset here: classes, dropped pictures, the webcam",
    "builder_help": "Start a new dataset, or add to the one shown above (an example or upload is copied first, so "
                    "the original stays as it was). Add a class, pick it, then drop pictures on it or take them with "
                    "the webcam. Everything is kept on the server for you; download it as a zip of class folders.",
    "builder_new": "Start a new dataset",
    "builder_name_label": "Name of a new dataset",
    "class_name_label": "New class",
    "class_add": "Add class",
    "class_pick_label": "Add pictures to class",
    "class_files_label": "Drop pictures of this class here",
    "webcam_label": "…or take one with the webcam",
    "webcam_add": "Add the webcam picture",
    "builder_zip": "Make a zip of this dataset",
    "builder_download": "Download the zip",
    "builder_mine_label": "Your datasets built here",
    "builder_open": "Open",
    "builder_started": "New dataset **{name}**: add a class, then pictures.",
    "builder_copied": "Made an editable copy **{name}** of {original} ({n} pictures); the original stays as it was.",
    "builder_class_added": "Class **{name}** added: now drop pictures on it.",
    "builder_added": "Added {n} picture(s) to **{cls}**.",
    "builder_skipped": " Skipped {n}: {files}.",
    "builder_zipped": "Zip ready: {n} pictures in {classes} classes.",
    "builder_counts": "**{name}**: {classes}",
    "builder_no_classes": "**{name}**: no classes yet.",
    "builder_class_count": "{cls} ({n})",
    "builder_text_data": "only picture datasets can be changed in the page: edit a text table in a spreadsheet",
    "builder_gone": "that dataset is gone or not yours: start a new one",
    "builder_nothing": "choose pictures to add first",
    "builder_no_webcam": "take a picture with the webcam first",
    "webcam_bad": "the webcam picture could not be used ({reason}): take it again, or drop a JPEG or PNG file",
    "class_empty_name": "type a name for the class first",
    "class_bad_chars": "the class name {name!r} cannot contain /, \\ or ..: use letters, digits, - or _",
    "class_bad_name": "{name!r} cannot name a class: use letters, digits, - or _ (not starting with a dot)",
    "class_too_long": "the class name is longer than {n} characters: shorten it",
    "class_exists": "there is already a class {name!r}: pick it in the list to add pictures",
    "class_pick_first": "pick the class the pictures belong to first (or add one)",
    "dataset_full": "the dataset is full",
    "class_no_pictures": "the class {name!r} has no pictures yet: add pictures to it before training",
    "need_two_classes": "a classifier needs at least two classes with pictures: add another class",
    # label errors
    "audit_head": "### Possible label errors",
    "audit_help": "The pictures whose label the model most disputes, judged by models that never saw them "
                  "(out-of-fold, on the frozen features). Keep, relabel or remove each, then save the corrected "
                  "dataset (a new one: the original stays as it was) and train again.",
    "audit_btn": "Find label errors",
    "audit_found": "{n} possible label error(s), most suspicious first. Pick one to keep, relabel or remove it.",
    "audit_none": "No likely label errors found.",
    "audit_caption": "{k}. {given} → {suggested}?",
    "audit_item_label": "Example",
    "audit_item": "{k}. {path}: labelled {given}, looks like {suggested} ({score})",
    "audit_action_label": "What to do with it",
    "audit_keep": "keep as {given}",
    "audit_remove": "remove it",
    "audit_relabel": "relabel as {cls}",
    "audit_decisions": "{relabelled} relabelled, {removed} removed.",
    "audit_save": "Save the corrected dataset and use it",
    "audit_saved": "Saved **{name}**: {relabelled} relabelled, {removed} removed; it is now the dataset of step 1. "
                   "Press **Train** to train on it.",
    "audit_run_first": "train a model first: the label check uses the run's backbone and data",
    "audit_no_data": "the run's dataset is no longer on the server: load it again, then train",
    "audit_find_first": "press Find label errors first",
    "audit_no_changes": "nothing to save: relabel or remove at least one example first",
    # augmentation preview
    "augment_preview_btn": "Show training pictures as the model sees them",
    "augment_preview_label": "Training pictures with augmentation (random crops and flips)",
    "augment_preview_auto": "Augmentation is **off** for the fitted classifier, and **on** if `auto` goes on to "
                            "fine-tune within its time budget: then each epoch the model sees pictures like these.",
    "augment_preview_on": "Augmentation is **on** with these settings: each epoch the model sees pictures like these.",
    "augment_preview_off": "Augmentation is **off** with these settings (frozen backbone, or off): the model sees each "
                           "picture whole. Set it to *on* to train on crops and flips like these.",
    "augment_preview_texts": "augmentation applies to pictures only",
}
TEXT.update(SAFETY_TEXT)  # the server's limits speak in their own module


def t(key: str, **values) -> str:
    """The text for `key`, with `values` filled in."""
    return TEXT[key].format(**values) if values else TEXT[key]


def duration(seconds: float | None) -> str:
    """A short human duration for the page: `45 s`, `3 min`, `1.5 h`."""
    return t("estimate_unknown") if seconds is None else format_seconds(seconds, rough=True)


def percent(x: float) -> str:
    return f"{100 * x:.1f}%"
