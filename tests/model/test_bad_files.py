"""Bad paths and bad files where models read them: encoder weights and checkpoint folders.

Each error names the path and says what is wrong with it (a folder for a file, a truncated copy, ...).
"""

from __future__ import annotations

import pytest

import stpredict as stp

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

from stpredict.model import PixNet  # noqa: E402
from stpredict.module import Encoder  # noqa: E402

CORRUPT = r"looks truncated or corrupt"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("weights")
    state = timm.create_model("resnet18").state_dict()
    save_file(state, folder / "model.safetensors")
    torch.save(state, folder / "plain.pth")
    return folder


def test_encoder_weights_folder_for_a_file(weights):
    with pytest.raises(
        IsADirectoryError, match=r"(?s)is a folder, not a file.*weights file.*model\.safetensors"
    ):
        Encoder("resnet18", weights=weights)
    with pytest.raises(IsADirectoryError, match="is a folder, not a file") as err:
        PixNet(["A", "B"], encoder="resnet18", encoder_weights=weights, decoder_channels=8)
    assert str(weights) in str(err.value)


@pytest.mark.parametrize("name", ["model.safetensors", "plain.pth"])
def test_truncated_encoder_weights_say_so(tmp_path, weights, name):
    cut = tmp_path / name
    data = (weights / name).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=CORRUPT) as err:
        Encoder("resnet18", weights=cut)
    assert str(cut) in str(err.value)


def test_load_a_misspelt_checkpoint_says_it_does_not_exist(tmp_path):
    (tmp_path / "model").mkdir()
    with pytest.raises(FileNotFoundError, match=r"does not exist.*Did you mean .*model"):
        stp.model.load(tmp_path / "modle")


def test_load_a_file_for_the_checkpoint_folder(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{}")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        stp.model.load(f)


def test_save_with_overwrite_never_writes_into_a_folder_of_the_users(tmp_path):
    """model.save(path, overwrite=True) wrote its files into any folder (and over files named like them)."""
    pytest.importorskip("torch")
    from stpredict.model import PixNet

    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "weights.pt").write_text("my own file")
    model = PixNet(["A", "B"], decoder_channels=16, train_mpp=2.0)
    with pytest.raises(FileExistsError, match="holds no stpredict checkpoint"):
        model.save(folder, overwrite=True)
    assert (folder / "weights.pt").read_text() == "my own file" and len(list(folder.iterdir())) == 1
    model.save(tmp_path / "ckpt")
    model.save(tmp_path / "ckpt", overwrite=True)  # its own checkpoint: replaced
