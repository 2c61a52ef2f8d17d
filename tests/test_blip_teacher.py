"""The real-mode BLIP teacher, on a tiny random BLIP saved and loaded offline."""

import pytest
import torch
from PIL import Image

from mcad_core.errors import McadError
from mcad_core.models.blip import load_blip_teacher

WORDS = "a an the red blue green circle square star left right of above below small large is there".split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A random 2-layer BLIP ITM model + processor with a WordPiece vocab written here (no hub)."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    vocab_dir = tmp_path_factory.mktemp("vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # transformers 5: BertTokenizer(vocab_file=...) ignores the file; from_pretrained on its folder reads it.
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir), local_files_only=True)
    assert len(tokenizer) == 5 + len(WORDS)
    processor = BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer)
    small = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    config = BlipConfig(
        vision_config=dict(image_size=32, patch_size=8, initializer_range=0.02, **small),  # default 1e-10: inert
        text_config=dict(vocab_size=len(tokenizer), encoder_hidden_size=32, max_position_embeddings=64,
                         pad_token_id=0, bos_token_id=2, sep_token_id=3, **small),
        image_text_hidden_size=16,
    )
    torch.manual_seed(0)
    BlipForImageTextRetrieval(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _images():
    return [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "green")]


def test_load_by_path_scores_depend_on_caption_and_image(blip_folder):
    teacher = load_blip_teacher(str(blip_folder))
    assert teacher.fused_dim == 32
    feats = teacher.encode_images(_images())
    assert feats.shape == (3, 1 + (32 // 8) ** 2, 32)
    same = feats[[0, 0]]
    h, m = teacher.score(same, ["a red circle", "a blue square left of a star"])
    assert h.shape == (2, 32) and m.shape == (2,)
    assert not torch.allclose(h[0], h[1]) and m[0] != m[1]
    h2, m2 = teacher.score(feats[[1, 0]], ["a red circle", "a red circle"])
    assert not torch.allclose(h2[0], h2[1])  # the caption cross-attends to its own image
    assert torch.allclose(h2[1], h[0], atol=1e-5) and torch.allclose(m2[1], m[0], atol=1e-5)
    assert len(teacher.fingerprint()) == 64


def test_missing_folder_is_one_line_error(tmp_path):
    with pytest.raises(McadError, match="not found") as err:
        load_blip_teacher(str(tmp_path / "no_such_blip"))
    assert "no_such_blip" in str(err.value) and "\n" not in str(err.value)


def test_folder_without_vocab_is_refused(blip_folder, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(blip_folder, broken)
    for f in broken.iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
            f.unlink()
    with pytest.raises(McadError, match="broken") as err:
        load_blip_teacher(str(broken))
    assert "\n" not in str(err.value)
