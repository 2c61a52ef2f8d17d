"""The real-mode BLIP teacher, on a tiny random BLIP saved and loaded offline."""

import pytest
import torch
from PIL import Image

from mcad_core.errors import McadError
from mcad_core.teachers.blip import load_blip_reference, load_blip_teacher, pre_caption, save_blip_reference

WORDS = "a an the red blue green circle square star left right of above below small large is there".split()


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory):
    """A random 2-layer BLIP ITM model + processor with a WordPiece vocab written here (no hub),
    [ENC] added as the BLIP authors' ``init_tokenizer`` does."""
    from transformers import BertTokenizer, BlipConfig, BlipForImageTextRetrieval, BlipImageProcessor, BlipProcessor

    folder = tmp_path_factory.mktemp("blip")
    vocab_dir = tmp_path_factory.mktemp("vocab")
    (vocab_dir / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    # transformers 5: BertTokenizer(vocab_file=...) ignores the file; from_pretrained on its folder reads it.
    tokenizer = BertTokenizer.from_pretrained(str(vocab_dir), local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    assert len(tokenizer) == 6 + len(WORDS)
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


def _spy_text_encoder(teacher, seen: list) -> None:
    """Record the input_ids the text encoder receives."""
    forward = teacher.model.text_encoder.forward

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"].clone())
        return forward(*args, **kwargs)

    teacher.model.text_encoder.forward = spy


def test_enc_token_replaces_cls_at_position_zero_as_blip_ran_itm(blip_folder):
    enc = load_blip_teacher(str(blip_folder))
    tok = enc.processor.tokenizer
    enc_id = tok.convert_tokens_to_ids("[ENC]")
    assert enc_id not in (tok.unk_token_id, tok.cls_token_id)
    feats = enc.encode_images(_images()[:2])
    seen = []
    _spy_text_encoder(enc, seen)
    _, m_enc = enc.score(feats, ["a red circle", "a blue square"])
    assert seen[0][:, 0].tolist() == [enc_id, enc_id]
    assert seen[0][0, 1] == tok.convert_tokens_to_ids("a")  # the caption itself is left as it was
    cls = load_blip_teacher(str(blip_folder), itm_token="cls")  # HF's way, kept for comparison
    seen.clear()
    _spy_text_encoder(cls, seen)
    _, m_cls = cls.score(feats, ["a red circle", "a blue square"])
    assert seen[0][:, 0].tolist() == [tok.cls_token_id] * 2
    assert not torch.allclose(m_enc, m_cls)
    assert enc.fingerprint() != cls.fingerprint()  # a cache scored one way is refused for the other


def test_tokenizer_without_enc_or_unknown_itm_token_is_one_line_error(blip_folder, tmp_path):
    import shutil

    from transformers import BertTokenizer

    plain = tmp_path / "plain"
    shutil.copytree(blip_folder, plain)
    tok = BertTokenizer.from_pretrained(str(blip_folder), local_files_only=True)
    vocab = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if t != "[ENC]"]
    for f in plain.iterdir():
        if "token" in f.name or f.name in ("vocab.txt", "special_tokens_map.json"):
            f.unlink()
    (plain / "vocab.txt").write_text("\n".join(vocab) + "\n")
    with pytest.raises(McadError, match=r"no \[ENC\] token.*itm_token: cls") as err:
        load_blip_teacher(str(plain))
    assert str(plain) in str(err.value) and "\n" not in str(err.value)
    assert load_blip_teacher(str(plain), itm_token="cls").itm_token_id is None
    with pytest.raises(McadError, match="teachers.single.itm_token: 'sep'"):
        load_blip_teacher(str(blip_folder), itm_token="sep")


def test_blip_reference_keeps_the_itm_token(blip_folder, tmp_path):
    save_blip_reference(tmp_path, load_blip_teacher(str(blip_folder), itm_token="cls"))
    again = load_blip_reference(tmp_path)
    assert (again.source, again.itm_token) == (str(blip_folder), "cls")


def test_itm_head_runs_in_fp32_under_bf16_autocast(blip_folder):
    teacher = load_blip_teacher(str(blip_folder))
    feats = teacher.encode_images(_images())
    captions = ["a red circle", "a blue square left of a star", "there is a small green star"]
    h32, m32 = teacher.score(feats, captions)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h16, m16 = teacher.score(feats, captions)
    assert h16.dtype == m16.dtype == torch.float32
    with torch.no_grad():  # the head and the difference in fp32, on the encoder's (bf16-computed) vector
        logits = teacher.model.itm_head(h16)
    assert torch.allclose(m16, logits[:, 1] - logits[:, 0], rtol=0, atol=1e-6)
    assert torch.allclose(h16, h32, atol=0.1) and torch.allclose(m16, m32, atol=0.05)


class _StateSpy(torch.Tensor):
    """A vision-state tensor that records being moved (cpu / cuda / numpy / to(device)); slices of it
    are state tensors too, anything computed from it is a plain tensor."""

    moves: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        to_device = name == "to" and any(isinstance(a, (str, torch.device)) for a in (*args[1:], *kwargs.values()))
        if name in ("cpu", "cuda", "numpy") or to_device:
            cls.moves.append(name)
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        return out.as_subclass(cls) if name == "__getitem__" and isinstance(out, torch.Tensor) else out


def test_vision_states_are_never_moved_while_pairs_are_scored(blip_folder, monkeypatch):
    from mcad_core.teachers.streaming import score_pairs

    teacher = load_blip_teacher(str(blip_folder))
    vision = teacher.model.vision_model.forward

    def spied_vision(*args, **kwargs):
        out = vision(*args, **kwargs)
        out.last_hidden_state = out.last_hidden_state.as_subclass(_StateSpy)
        return out

    teacher.model.vision_model.forward = spied_vision
    images = _images()

    def chunks(prepared_dir, records, chunk_images, workers=0, transform=None):
        for start in range(0, len(records), chunk_images):
            yield start, images[start : start + chunk_images]

    monkeypatch.setattr("mcad_core.data.loader.iter_image_chunks", chunks)
    _StateSpy.moves.clear()
    pair_image = torch.tensor([2, 0, 1, 0, 2])
    pair_text = ["a red circle", "a blue square", "a star", "a green star", "a red circle"]
    _, m = score_pairs(teacher, "unused", [{}] * 3, pair_image, pair_text, batch_size=2, chunk_images=2)
    assert _StateSpy.moves == []
    teacher.model.vision_model.forward = vision
    _, m_ref = teacher.score(teacher.encode_images([images[i] for i in pair_image]), pair_text)
    assert torch.allclose(m, m_ref, atol=1e-5)


def test_captions_are_cleaned_as_blips_pre_caption(blip_folder):
    assert pre_caption("A dog runs through the grass .") == "a dog runs through the grass"
    assert pre_caption('Two (small) "dogs": one; jumps!  ~high~ *') == "two small dogs one jumps high"
    assert pre_caption("Child's toy, red-and-blue\n") == "child's toy, red-and-blue"  # BLIP keeps , ' -
    assert pre_caption(" ".join(f"w{i}" for i in range(40))) == " ".join(f"w{i}" for i in range(30))
    teacher = load_blip_teacher(str(blip_folder))
    feats = teacher.encode_images(_images()[:1])[[0, 0]]
    h, m = teacher.score(feats, ["A RED circle .", "a red circle"])
    assert torch.equal(h[0], h[1]) and torch.equal(m[0], m[1])
