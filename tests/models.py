"""Builders of small randomly initialised models, saved with ``save_pretrained``.

They load back through ``AutoProcessor`` + ``AutoModelFor...`` exactly like a real checkpoint,
so the backends are tested on the code path a user's spec string takes. Everything is built
offline: the tokenizers are trained here on a few words. Sizes are parameters so that the
benchmarks can build larger models of realistic shape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Optional

WORDS = (
    "a the cat dog sits on red blue green sofa image picture describe this there is man woman tree "
    "car in of and with left right small large two three person table cup mug window sky grass"
).split()

#: LLaVA-1.5 style: a system turn is rendered as a plain first line; the image comes first
LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{% endif %}{{ '\n' }}"
    "{% else %}{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

#: Mistral style (as LLaVA-1.6 Mistral): no system role at all
MISTRAL_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('Only user and assistant roles are supported') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' }}"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{{ ' [/INST]' }}{% else %}{% for c in message['content'] %}{{ c['text'] }}{% endfor %}{{ '</s>' }}{% endif %}"
    "{% endfor %}"
)


def folder_size(folder: Path) -> int:
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def _saved(folder, model, processor) -> Path:
    """``model`` and its processor (or tokenizer) saved in ``folder`` like a real checkpoint."""
    folder = Path(folder)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _bert_tokenizer(folder, **kwargs):
    """A BERT word-piece tokenizer over ``WORDS``; its vocabulary file is written to ``folder``."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path = folder / "vocab.txt"
    vocab_path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS) + "\n")
    return BertTokenizer(vocab=str(vocab_path), **kwargs)  # vocab_file= is ignored by transformers 5


def build_chat_tokenizer(chat_template: str, vocab_size: int = 300, corpus: Optional[List[str]] = None):
    """A byte-level BPE tokenizer trained on ``WORDS`` (and ``corpus``) with ``<image>``, left
    padding and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] * 4 + list(corpus or [])
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
        padding_side="left", chat_template=chat_template,
    )
    fast.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return fast


def llava_configs(vocab_size: int, *, image_size: int = 30, patch_size: int = 6, vision_hidden: int = 32,
                  vision_layers: int = 2, text_hidden: int = 32, text_layers: int = 2, text_intermediate: int = 64,
                  heads: int = 2, kv_heads: Optional[int] = None, max_positions: int = 2048):
    from transformers import CLIPVisionConfig, LlamaConfig

    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=vision_hidden, intermediate_size=vision_hidden * 4,
        num_hidden_layers=vision_layers, projection_dim=vision_hidden,
        # CLIP's 64-wide heads for real sizes (ViT-L: 16 heads of 1024); a few heads for tiny ones
        num_attention_heads=vision_hidden // 64 if vision_hidden >= 256 else max(1, vision_hidden // 16),
    )
    text = LlamaConfig(
        vocab_size=vocab_size, hidden_size=text_hidden, intermediate_size=text_intermediate, num_hidden_layers=text_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, max_position_embeddings=max_positions,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    return vision, text


def make_llava(*, next_version: bool = False, chat_template: Optional[str] = None, seed: int = 0,
               vocab_size: Optional[int] = None, tokenizer_vocab_size: int = 300, corpus: Optional[List[str]] = None,
               device: str = "cpu", dtype=None, **sizes):
    """A random LLaVA-1.5 (or LLaVA-NeXT with ``next_version``) and its processor, in memory.

    ``sizes`` are the keyword arguments of :func:`llava_configs`; ``vocab_size`` defaults to the
    tokenizer's (a larger one, as real models have, only adds ids that decode to nothing).
    """
    import torch
    from transformers import (CLIPImageProcessorPil, LlavaConfig, LlavaForConditionalGeneration, LlavaNextConfig,
                              LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor,
                              LlavaProcessor)

    template = chat_template or (MISTRAL_TEMPLATE if next_version else LLAVA_TEMPLATE)
    tokenizer = build_chat_tokenizer(template, tokenizer_vocab_size, corpus)
    vision, text = llava_configs(vocab_size or len(tokenizer), **sizes)
    side, patch = vision.image_size, vision.patch_size
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    common = dict(image_token_index=image_token, vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    if next_version:
        # the shapes of LLaVA-1.6's anyres grid (1x2, 2x1, 2x2, 1x3, 3x1 tiles)
        pins = [[side, side * 2], [side * 2, side], [side * 2, side * 2], [side * 3, side], [side, side * 3]]
        config = LlavaNextConfig(vision_config=vision, text_config=text, image_grid_pinpoints=pins, **common)
        model_class = LlavaNextForConditionalGeneration
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side}, crop_size={"height": side, "width": side}, image_grid_pinpoints=pins)
        processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                       vision_feature_select_strategy="default", chat_template=template,
                                       num_additional_image_tokens=1)
    else:
        config = LlavaConfig(vision_config=vision, text_config=text, **common)
        model_class = LlavaForConditionalGeneration
        image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
        processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
                                   vision_feature_select_strategy="default", chat_template=template,
                                   num_additional_image_tokens=1)
    default_dtype = torch.get_default_dtype()
    try:
        if dtype is not None:
            torch.set_default_dtype(dtype)  # build big models directly in their final precision
        with torch.device(device):
            model = model_class(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval(), processor


def build_llava(folder, **kwargs) -> Path:
    """A random LLaVA (see :func:`make_llava`) saved in ``folder`` like a real checkpoint."""
    return _saved(folder, *make_llava(**kwargs))


def make_grounding_dino(vocab_folder, *, seed: int = 0, max_text_len: int = 32, image_side: int = 96,
                        d_model: int = 32, full_size: bool = False, device: str = "cpu"):
    """A random Grounding DINO and its processor, in memory; the BERT vocabulary is written to
    ``vocab_folder``. ``full_size`` takes the default configuration (Swin-T and BERT-base: the
    shape of grounding-dino-tiny) and its 800-1333 px preprocessing."""
    import torch
    from transformers import (BertConfig, GroundingDinoConfig, GroundingDinoForObjectDetection,
                              GroundingDinoImageProcessorPil, GroundingDinoProcessor, ResNetConfig)

    tokenizer = _bert_tokenizer(vocab_folder)
    if full_size:
        config = GroundingDinoConfig()
        image_processor = GroundingDinoImageProcessorPil()
    else:
        backbone = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                                out_features=["stage1", "stage2"])
        text = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, max_position_embeddings=max(64, max_text_len))
        config = GroundingDinoConfig(
            backbone_config=backbone, text_config=text, d_model=d_model, encoder_layers=1, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=20,
            num_feature_levels=2, encoder_n_points=2, decoder_n_points=2, max_text_len=max_text_len,
        )
        image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": image_side * 2 // 3, "longest_edge": image_side})
    torch.manual_seed(seed)
    with torch.device(device):
        model = GroundingDinoForObjectDetection(config)
    return model.eval(), GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_grounding_dino(folder, **kwargs) -> Path:
    """A random Grounding DINO (tiny ResNet backbone, tiny BERT; see :func:`make_grounding_dino`) saved in ``folder``."""
    return _saved(folder, *make_grounding_dino(folder, **kwargs))


def _clip_bpe_vocab() -> tuple[Dict[str, int], List[tuple]]:
    """A CLIP-style BPE vocabulary (``</w>`` word ends) that spells every word of ``WORDS``."""
    vocab: Dict[str, int] = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for ch in "abcdefghijklmnopqrstuvwxyz.,":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    merges: List[tuple] = []
    for word in WORDS:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(parts[0] + parts[1], len(vocab))
            parts = [parts[0] + parts[1]] + parts[2:]
    return vocab, merges


def build_owlv2(folder, *, seed: int = 0, image_side: int = 64, patch_size: int = 16) -> Path:
    """A random OWLv2; its BOS token id is non-zero (OWL masks queries whose first id is 0)."""
    import torch
    from transformers import (CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil,
                              Owlv2Processor, Owlv2TextConfig, Owlv2VisionConfig)

    vocab, merges = _clip_bpe_vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)
    text = Owlv2TextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=2, max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = Owlv2VisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                               image_size=image_side, patch_size=patch_size)
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(Owlv2Config(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=32))
    with torch.no_grad():
        # random box heads saturate to degenerate boxes; a small last layer keeps each box near
        # its patch (OWL adds a per-patch box bias), like a trained model's boxes
        model.box_head.dense2.weight.mul_(0.05)
        model.box_head.dense2.bias.zero_()
    processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(size={"height": image_side, "width": image_side}),
                               tokenizer=tokenizer)
    return _saved(folder, model, processor)


#: Labels of Detoxify's "original" model (a BERT sequence classifier with sigmoid outputs).
TOXICITY_LABELS = ("toxicity", "severe_toxicity", "obscene", "threat", "insult", "identity_attack")


def make_clip(*, seed: int = 0, image_size: int = 32, patch_size: int = 8, hidden: int = 32, layers: int = 2,
              heads: int = 2, projection_dim: int = 32, context_length: int = 16, intermediate: Optional[int] = None,
              text_hidden: Optional[int] = None, text_layers: Optional[int] = None, text_heads: Optional[int] = None):
    """A random ``CLIPModel`` and its ``CLIPProcessor`` (PIL image processor, CLIP-style BPE), in memory.

    The start and end tokens take the last ids, as in OpenAI's vocabulary, so the text tower
    pools at the end token as it does for real checkpoints. Sizes are parameters so that a
    benchmark can build CLIP ViT-L/14 at 336 px (vision 1024 wide, 24 layers, 16 heads, patch 14;
    text 768 wide, 12 layers, 12 heads; projection 768; context 77). The text tower takes the
    vision sizes unless ``text_*`` are given.
    """
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor, CLIPTokenizer

    vocab, merges = _clip_bpe_vocab()
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.pop(special)
    vocab = {token: i for i, token in enumerate(vocab)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=context_length)
    text_width = text_hidden or hidden
    text = dict(vocab_size=len(vocab), hidden_size=text_width, intermediate_size=text_width * 4,
                num_hidden_layers=text_layers or layers, num_attention_heads=text_heads or heads,
                max_position_embeddings=context_length,
                bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"])
    vision = dict(hidden_size=hidden, intermediate_size=intermediate or hidden * 4, num_hidden_layers=layers,
                  num_attention_heads=heads, image_size=image_size, patch_size=patch_size)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size})
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_clip(folder, **kwargs) -> Path:
    """A random CLIP (see :func:`make_clip`) saved in ``folder``; loads through ``AutoModel``/``AutoProcessor``."""
    return _saved(folder, *make_clip(**kwargs))


def make_toxicity(folder, *, seed: int = 0, labels=TOXICITY_LABELS):
    """A random BERT sequence classifier with one sigmoid output per label (Detoxify's shape)
    and its tokenizer, in memory; the vocabulary file is written to ``folder``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer(folder, model_max_length=64)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=len(labels),
                        id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)},
                        problem_type="multi_label_classification")
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval(), tokenizer


def build_toxicity(folder, **kwargs) -> Path:
    """A random toxicity classifier (see :func:`make_toxicity`) saved in ``folder``."""
    return _saved(folder, *make_toxicity(folder, **kwargs))


def quiet_transformers() -> None:
    """Silence the load/save progress bars and the torchvision fallback warnings in test logs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
