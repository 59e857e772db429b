"""The project's committed Lightning checkpoints still load with weights_only=True and
rebuild the module, hyper-parameters included."""

from lit_subject import Regressor


def rebuild(state):
    module = Regressor(**state["hyper_parameters"])
    module.load_state_dict(state["state_dict"], strict=True)
    return module


def test_committed_ckpt_files_still_load(ckpt_backcompat):
    loaded = ckpt_backcompat("golden", rebuild=rebuild, pattern="*.ckpt")
    assert loaded["epoch=0-step=2.ckpt"]["global_step"] == 2
