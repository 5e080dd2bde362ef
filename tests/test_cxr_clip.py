"""CXR-CLIP: loading a checkpoint in kakaobrain's released format, built here from reference parts."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.models import resnet50
from transformers import BertConfig, BertModel

from cxrl.models.cxr_clip import (
    RELEASE_PREPROCESS,
    ClipConfig,
    ClipPreprocess,
    CXRClip,
    load_release,
    tiny_config,
)
from cxrl.models.text_tokenizer import load_tokenizer
from cxrl.pretrain.losses import clip_loss, sigmoid_loss
from cxrl.pretrain.vocab import train_wordpiece

WORDS = "no acute cardiopulmonary process heart size normal small left pleural effusion the lungs are clear".split()


def write_bert_dir(path):
    """A tiny Bio_ClinicalBERT-style directory: config.json + vocab.txt."""
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    cfg = {
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    }
    (path / "config.json").write_text(json.dumps(cfg))
    return cfg


def release_transform(images):
    """kakaobrain's evaluation transform on tensors: Resize(224), CenterCrop(224), ToTensor, Normalize(0.5)."""
    tf = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(224),
            T.Normalize(mean=[0.5] * 3, std=[0.5] * 3),
        ]
    )
    return tf(images.expand(-1, 3, -1, -1))


def test_release_preprocessing_pinned_on_a_known_image():
    """A 100x150 image whose columns step 0 -> 1 at x = 50 and x = 100, whose top 10 rows are white.

    Release: shorter side 100 -> 224 (so 150 -> 336), centre crop removes 56 columns on each
    side, mean = std = 0.5 -> values in [-1, 1]: the step at x = 50 lands at column 112 - 56 = 56 of
    the crop, the one at x = 100 at 224 - 56 = 168; the white band is the top 22.4 rows.
    """
    img = torch.zeros(1, 1, 100, 150)
    img[..., 50:100] = 1.0
    img[..., :10, :] = 1.0
    cfg = ClipConfig(
        image_arch="small",
        image_size=224,
        vocab_size=16,
        hidden_size=8,
        num_layers=1,
        num_heads=1,
        intermediate_size=8,
        max_position=16,
        preprocess=RELEASE_PREPROCESS,
    )
    x = CXRClip(cfg).preprocess(img)
    assert x.shape == (1, 3, 224, 224)
    torch.testing.assert_close(x, release_transform(img), atol=1e-5, rtol=0)
    row = x[0, 0, 100]  # below the white band
    assert (row[:50] == -1).all() and (row[62:162] == 1).all() and (row[174:] == -1).all()
    assert (x[0, :, :20, :] == 1).all() and (x[0, :, 30:, :50] == -1).all()
    # the default world's own preprocessing: square resize, ImageNet statistics (not the release's)
    default = CXRClip(cfg.model_copy(update={"preprocess": ClipPreprocess()})).preprocess(img)
    assert default.shape == (1, 3, 224, 224)
    torch.testing.assert_close(default[0, 0, 100, :40], torch.full((40,), -0.485 / 0.229))
    assert ClipConfig().preprocess.mean == (0.485, 0.456, 0.406)  # committed default-world manifest


@pytest.mark.slow  # a ResNet-50 and a BERT
def test_release_checkpoint_loads_and_embeds_like_the_reference(tmp_path):
    torch.manual_seed(0)
    bert_cfg = write_bert_dir(tmp_path / "Bio_ClinicalBERT")
    resnet, bert = resnet50(), BertModel(BertConfig(**bert_cfg))
    img_proj, txt_proj = torch.nn.Linear(2048, 512), torch.nn.Linear(32, 512)
    state = {
        f"image_encoder.resnet.{k}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")
    }
    state |= {f"text_encoder.text_encoder.{k}": v for k, v in bert.state_dict().items()}
    state |= {f"image_projection.projection.{k}": v for k, v in img_proj.state_dict().items()}
    state |= {f"text_projection.projection.{k}": v for k, v in txt_proj.state_dict().items()}
    state["logit_scale"] = torch.tensor(2.6593)
    config = {
        "base": {"image_size": 224, "text_max_length": 256},
        "model": {
            "name": "clip_custom",
            "temperature": 0.07,
            "image_encoder": {"source": "torchvision", "name": "resnet", "pretrained": True},
            "text_encoder": {
                "source": "huggingface",
                "name": "emilyalsentzer/Bio_ClinicalBERT",
                "pooling": "eos",
            },
            "projection_head": {"name": "linear", "dropout": 0.1, "proj_dim": 512},
        },
    }
    torch.save({"config": config, "model": state, "epoch": 3}, tmp_path / "r50_mcc.tar")

    model = load_release(tmp_path / "r50_mcc.tar", tmp_path / "Bio_ClinicalBERT")
    tokenizer = load_tokenizer(tmp_path / "Bio_ClinicalBERT")
    assert model.cfg.num_heads == 4 and model.cfg.proj_dim == 512
    assert model.cfg.preprocess == RELEASE_PREPROCESS
    images = torch.rand(2, 1, 160, 200)
    texts = ["heart size normal.", "small left pleural effusion, the lungs are clear."]
    tokens = dict(tokenizer(texts, padding="longest", return_tensors="pt"))
    with torch.no_grad():
        x = release_transform(images)  # the release's own evaluation transform (torchvision)
        resnet.fc = torch.nn.Identity()
        want_img = F.normalize(img_proj(resnet.eval()(x)), dim=-1)
        states = bert.eval()(**tokens).last_hidden_state
        eos = tokens["attention_mask"].sum(1) - 1
        assert tokens["input_ids"][torch.arange(2), eos].tolist() == [3, 3]  # [SEP]
        want_txt = F.normalize(txt_proj(states[torch.arange(2), eos]), dim=-1)
        assert torch.allclose(model.encode_image(images), want_img, atol=1e-4)
        assert torch.allclose(model.encode_text(tokens), want_txt, atol=1e-5)


def test_release_loader_rejects_wrong_files(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        load_release(tmp_path / "missing.tar")
    torch.save({"state_dict": {}}, tmp_path / "other.tar")
    with pytest.raises(ValueError, match="'config' and 'model'"):
        load_release(tmp_path / "other.tar")
    with pytest.raises(ValueError, match="not a BERT tokenizer"):
        load_tokenizer(tmp_path)


def test_small_model_learns_to_match_pairs_contrastively():
    torch.manual_seed(0)
    texts = ["the lungs are clear.", "small left pleural effusion."] * 4
    tok = train_wordpiece(texts, vocab_size=60, min_frequency=1)
    cfg = tiny_config(len(tok), 32, 16)
    model = CXRClip(cfg)
    images = torch.zeros(8, 1, 32, 32)
    images[1::2, :, :, :16] = 1.0  # "effusion" images are bright on one side
    tokens = dict(tok(texts, padding="longest", return_tensors="pt"))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = clip_loss(model.encode_image(images), model.encode_text(tokens), model.logit_scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        sim = (
            model.encode_image(images[:2])
            @ model.encode_text(dict(tok(texts[:2], padding="longest", return_tensors="pt"))).t()
        )
    assert sim[0, 0] > sim[0, 1] and sim[1, 1] > sim[1, 0]


def test_clip_loss_soft_targets_hand_computed():
    emb = torch.eye(2)  # logits = I at logit_scale 0 (temperature 1)
    scale = torch.tensor(0.0)
    one_positive = math.log(1 + math.e) - 1.0  # -log(e / (e + 1))
    assert clip_loss(emb, emb, scale).item() == pytest.approx(one_positive, abs=1e-6)
    both = torch.ones(2, 2, dtype=torch.bool)  # targets (0.5, 0.5) in every row
    assert clip_loss(emb, emb, scale, both).item() == pytest.approx(math.log(1 + math.e) - 0.5, abs=1e-6)
    # image 0 also matches report 1 (not the reverse): image rows (.5,.5),(0,1); report rows (1,0),(.5,.5)
    asym = torch.tensor([[True, True], [False, True]])
    assert clip_loss(emb, emb, scale, asym).item() == pytest.approx(math.log(1 + math.e) - 0.75, abs=1e-6)


def test_clip_loss_rejects_rows_without_a_positive():
    with pytest.raises(ValueError, match="a positive in every row"):
        clip_loss(
            torch.eye(2), torch.eye(2), torch.tensor(0.0), torch.tensor([[True, False], [False, False]])
        )


def test_sigmoid_loss_hand_computed():
    emb = torch.eye(2)  # cosines: 1 on the diagonal, 0 off it
    scale, bias = torch.tensor(0.0), torch.tensor(-0.5)  # logits: +0.5 diagonal, -0.5 off it

    def softplus(v: float) -> float:
        return math.log(1 + math.exp(v))

    # identity positives: four pairs each at -log(sigmoid(0.5)) = softplus(-0.5); sum / B
    assert sigmoid_loss(emb, emb, scale, bias).item() == pytest.approx(4 * softplus(-0.5) / 2, abs=1e-6)
    # every pair positive: the off-diagonal pairs cost softplus(0.5) instead
    both = torch.ones(2, 2, dtype=torch.bool)
    expected = (2 * softplus(-0.5) + 2 * softplus(0.5)) / 2
    assert sigmoid_loss(emb, emb, scale, bias, both).item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(ValueError, match="positives must be"):
        sigmoid_loss(emb, emb, scale, bias, torch.ones(3, 3, dtype=torch.bool))
