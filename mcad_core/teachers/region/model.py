"""The embedded single-stream teacher: caption words and object tokens fused by joint self-attention.

Why the extra heads: a plain fused [CLS] trained from scratch on a CPU budget does not
learn binding (docs/RESEARCH.md, tries 1-2). What does is an explicit per-phrase comparator
("<size> <colour> <shape>" against each object's predicted attributes; its soft arg-max
points at the phrase's object) and a relation term (the relation word against the
position difference of the two pointed objects). The match logit adds them to the
[CLS] head as soft AND-terms (log-sigmoids), and the fused vector h carries the
[CLS] state with the pooled comparator and relation states, so the evidence MCAD
projects is the binding evidence itself.
"""

from __future__ import annotations

import torch
from torch import nn

from mcad_core.teachers.region.objects import SLOT_COLOUR, SLOT_GEOM, SLOT_SHAPE, SLOT_SIZE, SLOT_VALID
from mcad_core.teachers.region.tokenizer import PAD, WordTokenizer


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


def _positions(mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` True positions per row of ``mask`` [B, L] (index L where fewer) and their validity."""
    length = mask.shape[1]
    idx = torch.arange(length, device=mask.device).expand_as(mask)
    pos = torch.where(mask, idx, torch.full_like(idx, length)).sort(dim=1).values[:, :n]
    if pos.shape[1] < n:
        pos = torch.cat([pos, pos.new_full((pos.shape[0], n - pos.shape[1]), length)], dim=1)
    return pos, pos < length


def _gather(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """x [B, L, ...] at positions pos [B, P] (clamped; callers mask invalid ones)."""
    pos = pos.clamp(max=x.shape[1] - 1)
    return x.gather(1, pos.view(*pos.shape, *([1] * (x.dim() - 2))).expand(*pos.shape, *x.shape[2:]))


class CrossEncoder(nn.Module):
    """[CLS] + caption tokens + object tokens -> transformer -> (h, m) plus the comparator's intermediates."""

    def __init__(self, cfg: dict, tokenizer: WordTokenizer) -> None:
        super().__init__()
        d = cfg["d_model"]
        self.max_phrases, self.max_relations = cfg["max_phrases"], cfg["max_relations"]
        self.embed = nn.Embedding(len(tokenizer.words), d, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(tokenizer.max_len, d))
        self.type_emb = nn.Parameter(torch.zeros(2, d))
        self.cls = nn.Parameter(torch.zeros(d))
        self.geom = _mlp(4, d, d)
        layer = nn.TransformerEncoderLayer(d, cfg["heads"], cfg["ff"], dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.fusion = nn.TransformerEncoder(layer, cfg["layers"], enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)
        self.cls_head = nn.Linear(d, 1)
        ch, rh = cfg["comparator_hidden"], cfg["relation_hidden"]
        q = cfg["attribute_dim"]
        self.attr_proj = nn.Linear(d, q, bias=False)  # shared by words and objects, so equal words give aligned codes
        self.comp_attr = nn.Linear(3 * q, ch)
        self.comp_word = nn.Linear(d, ch, bias=False)
        self.comp_obj = nn.Linear(d, ch, bias=False)
        self.comp_out = nn.Linear(ch, 1)
        self.rel_in = nn.Linear(d + 2, rh)
        self.rel_out = nn.Linear(rh, 1)
        self.rel_dir = nn.Linear(d, 2)  # the direction each relation word expects: a bilinear word x offset term
        self.fused_dim = d + ch + rh + 4
        for name, ids in (("shape_ids", tokenizer.shape_ids), ("colour_ids", tokenizer.colour_ids),
                          ("size_ids", tokenizer.size_ids), ("relation_ids", tokenizer.relation_ids)):
            self.register_buffer(name, torch.tensor(ids), persistent=False)
        nn.init.normal_(self.pos, std=0.02)
        nn.init.normal_(self.type_emb, std=0.02)
        nn.init.normal_(self.cls, std=0.02)

    def forward(self, slots: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """slots [B, K, SLOT_DIM], ids [B, L] -> h [B, fused_dim], m [B], phrase logits [B, P, K] and positions."""
        emb = self.embed.weight
        valid = slots[..., SLOT_VALID] > 0.5
        a_shape = slots[..., SLOT_SHAPE] @ emb[self.shape_ids]
        a_colour = slots[..., SLOT_COLOUR] @ emb[self.colour_ids]
        a_size = slots[..., SLOT_SIZE] @ emb[self.size_ids]
        geom = slots[..., SLOT_GEOM]
        objects = a_shape + a_colour + a_size + self.geom(geom) + self.type_emb[1]
        ids = ids[:, : max(1, int((ids != PAD).sum(1).max()))]  # padding adds cost, never evidence
        words = self.embed(ids)
        b, length = ids.shape
        seq = torch.cat([self.cls.expand(b, 1, -1), words + self.pos[:length] + self.type_emb[0], objects], dim=1)
        pad = torch.cat([valid.new_zeros(b, 1), ids == PAD, ~valid], dim=1)
        out = self.norm(self.fusion(seq, src_key_padding_mask=pad))
        cls_state, word_states, obj_states = out[:, 0], out[:, 1:1 + length], out[:, 1 + length:]

        # Phrases: each shape word with the colour and size words before it, against every object.
        is_shape = torch.isin(ids, self.shape_ids)
        p_pos, p_valid = _positions(is_shape, min(self.max_phrases, max(1, int(is_shape.sum(1).max()))))
        prev1 = torch.cat([words.new_zeros(b, 1, words.shape[2]), words[:, :-1]], dim=1)
        prev2 = torch.cat([words.new_zeros(b, 2, words.shape[2]), words[:, :-2]], dim=1)
        e_shape, e_colour, e_size = _gather(words, p_pos), _gather(prev1, p_pos), _gather(prev2, p_pos)
        proj = self.attr_proj
        pairs = torch.cat([proj(e)[:, :, None] * proj(a)[:, None] for e, a in
                           ((e_size, a_size), (e_colour, a_colour), (e_shape, a_shape))], dim=-1)  # [B, P, K, 3q]
        comp_h = nn.functional.gelu(self.comp_attr(pairs) + self.comp_word(_gather(word_states, p_pos))[:, :, None]
                                    + self.comp_obj(obj_states)[:, None])  # [B, P, K, ch]
        logits = self.comp_out(comp_h).squeeze(-1)  # [B, P, K]
        pair_ok = p_valid[:, :, None] & valid[:, None, :]
        neg = torch.finfo(logits.dtype).min
        ptr = logits.masked_fill(~pair_ok, neg).softmax(dim=2) * pair_ok
        phrase_score = (ptr * logits).sum(2)  # soft max over objects: is there an object like this phrase?
        cover = logits.masked_fill(~pair_ok, neg).softmax(dim=1) * pair_ok
        object_score = (cover * logits).sum(1)  # is every object mentioned?

        # Relations: the key word against the position difference of the phrases before and after it.
        is_rel = torch.isin(ids, self.relation_ids)
        r_pos, r_valid = _positions(is_rel, min(self.max_relations, max(1, int(is_rel.sum(1).max()))))
        n_before = ((p_pos[:, None, :] < r_pos[:, :, None]) & p_valid[:, None, :]).sum(-1)  # [B, R]
        r_valid = r_valid & (n_before >= 1) & (n_before < p_valid.sum(1, keepdim=True))
        centre = ptr @ geom[..., :2]  # [B, P, 2]
        before = _gather(centre, (n_before - 1).clamp(min=0))
        after = _gather(centre, n_before.clamp(max=p_pos.shape[1] - 1))
        rel_word, offset = _gather(words, r_pos), (before - after) * 4.0
        rel_h = nn.functional.gelu(self.rel_in(torch.cat([rel_word, offset], dim=-1)))  # [B, R, rh]
        rel_score = self.rel_out(rel_h).squeeze(-1) + (self.rel_dir(rel_word) * offset).sum(-1)

        logsig = nn.functional.logsigmoid
        evidence = torch.stack([self.cls_head(cls_state).squeeze(-1), (logsig(phrase_score) * p_valid).sum(1),
                                (logsig(object_score) * valid).sum(1), (logsig(rel_score) * r_valid).sum(1)], dim=-1)
        m = evidence.sum(-1)
        per_phrase = (ptr[..., None] * comp_h).sum(2) * p_valid[..., None]  # each phrase's state at its object
        comp_pooled = per_phrase.sum(1) / p_valid.sum(1, keepdim=True).clamp(min=1)
        rel_pooled = (rel_h * r_valid[..., None]).sum(1) / r_valid.sum(1, keepdim=True).clamp(min=1)
        h = torch.cat([cls_state, comp_pooled, rel_pooled, evidence], dim=-1)  # m = h[:, -4:].sum(-1)
        return {"h": h, "m": m, "phrase_logits": logits, "phrase_pos": p_pos, "phrase_valid": p_valid}
