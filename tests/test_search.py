"""Search core: chunked exact neighbours and residual-preserving concept edits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audit.concepts import Concept, ConceptBank
from audit.errors import InputError
from audit.sae import SAEConfig, build_sae, sae_fingerprint
from audit.search import (
    ConceptEdit,
    concept_activations,
    edit_embeddings,
    nearest_neighbours,
    parse_edits,
    typical_strength,
)
from audit.store import write_store


def _world(tmp_path, n_rows=3000, d=32, n_atoms=16, seed=0):
    """Rows are sparse non-negative mixes of known atoms; the SAE's decoder *is* the atoms."""
    rng = np.random.default_rng(seed)
    atoms = np.linalg.qr(rng.normal(size=(d, d)))[0][:n_atoms]  # orthonormal atoms
    codes = np.zeros((n_rows, n_atoms))
    for i in range(n_rows):
        chosen = rng.choice(n_atoms, 2, replace=False)
        codes[i, chosen] = rng.uniform(0.5, 1.5, 2)
    x = (codes @ atoms).astype(np.float32)
    sae = build_sae(SAEConfig(arch="relu", d_in=d, n_latents=n_atoms, l1=0.0))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(atoms).float())
        sae.W_enc.copy_(torch.from_numpy(atoms.T).float())
        sae.b_enc.zero_()
        sae.b_pre.zero_()
        sae.set_preprocessing(torch.zeros(d), 1.0)
    store = write_store(tmp_path / "g", x, shard_rows=700)
    bank = ConceptBank(
        name="atoms",
        sae={"fingerprint": sae_fingerprint(sae)},
        concepts=[
            Concept(latent=j, name=f"atom{j}", score=0.9, closest=f"atom{j}", validated=True)
            for j in range(n_atoms)
        ],
    )
    return sae.eval(), store, codes, bank


@pytest.mark.parametrize("chunk_rows", [1, 97, 700, 10_000])
def test_chunked_neighbours_equal_brute_force(tmp_path, chunk_rows):
    _, store, _, _ = _world(tmp_path, n_rows=400)
    x = store.read()
    queries = torch.from_numpy(x[[3, 10, 399]])
    idx, sims = nearest_neighbours(store, queries, top=7, chunk_rows=chunk_rows)
    g = x / np.linalg.norm(x, axis=1, keepdims=True)
    q = queries.numpy() / np.linalg.norm(queries.numpy(), axis=1, keepdims=True)
    brute = q @ g.T
    expected = np.argsort(-brute, axis=1, kind="stable")[:, :7]
    np.testing.assert_allclose(sims, np.take_along_axis(brute, expected, axis=1), atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(brute, idx, axis=1), sims, atol=1e-5)
    idx_ex, _ = nearest_neighbours(
        store, queries, top=5, chunk_rows=chunk_rows, exclude=[3, None, 399]
    )
    assert 3 not in idx_ex[0] and 399 not in idx_ex[2]


def test_edit_keeps_the_residual(tmp_path):
    sae, store, _, _ = _world(tmp_path)
    x = torch.from_numpy(store.read(0, 5)) + 0.05 * torch.randn(5, 32)  # off-dictionary part
    unchanged = edit_embeddings(sae, x, [], {})
    torch.testing.assert_close(unchanged, x)
    edited = edit_embeddings(sae, x, [ConceptEdit("atom3", (3,), 2.0)], {3: 1.0})
    delta = edited - x
    # The change lies along atom 3 only, and sets its activation to exactly 2.
    direction = sae.decoder_directions()[3]
    torch.testing.assert_close(
        delta, torch.outer(2.0 - sae.encode(x)[:, 3], direction), atol=1e-5, rtol=1e-5
    )


def test_adding_a_concept_retrieves_rows_that_have_it(tmp_path):
    sae, store, codes, _ = _world(tmp_path)
    without = np.nonzero(codes[:, 5] == 0)[0][:20]
    strengths = dict(zip([5], typical_strength(sae, store, [5]), strict=True))
    hits_before, hits_after = 0, 0
    for row in without:
        x = torch.from_numpy(store.take([row]))
        before, _ = nearest_neighbours(store, x, top=10, exclude=[int(row)])
        after, _ = nearest_neighbours(
            store,
            edit_embeddings(sae, x, [ConceptEdit("atom5", (5,), 1.5)], strengths),
            top=10,
            exclude=[int(row)],
        )
        hits_before += int((codes[before[0], 5] > 0).sum())
        hits_after += int((codes[after[0], 5] > 0).sum())
    assert hits_after / (20 * 10) >= 0.8 > hits_before / (20 * 10) + 0.5


def test_a_split_concept_is_set_to_its_typical_code_not_each_latents(tmp_path):
    """A concept carried by two latents that mostly fire on different rows (a colour split by
    shape) is set to the code a row of the concept has: each latent at its mean over the rows
    where the concept is on, summing to the concept's typical activation, not to twice it."""
    sae, store, codes, _ = _world(tmp_path)
    code = typical_strength(sae, store, [5, 6])
    total = codes[:, 5] + codes[:, 6]
    on = total > 0.1 * total.max()
    np.testing.assert_allclose(code, codes[on][:, [5, 6]].mean(0), rtol=1e-4)
    np.testing.assert_allclose(code.sum(), total[on].mean(), rtol=1e-4)
    # Each latent's own typical strength (its mean where *it* is on) would add about twice as
    # much: the two are rarely on together (2 atoms of 16 per row).
    alone = [codes[codes[:, j] > 0.1 * codes[:, j].max(), j].mean() for j in (5, 6)]
    assert code.sum() < 0.65 * sum(alone)


def test_removing_a_concept_lowers_its_activation_in_results(tmp_path):
    sae, store, codes, _ = _world(tmp_path)
    rows = np.nonzero(codes[:, 2] > 1.0)[0][:15]
    edit = ConceptEdit("atom2", (2,), 0.0)
    for row in rows:
        x = torch.from_numpy(store.take([row]))
        before, _ = nearest_neighbours(store, x, top=10)
        after, _ = nearest_neighbours(store, edit_embeddings(sae, x, [edit], {2: 1.0}), top=10)
        act_before = concept_activations(sae, store, before[0], [edit])["atom2"].mean()
        act_after = concept_activations(sae, store, after[0], [edit])["atom2"].mean()
        assert act_after < act_before


def test_parse_edits_resolves_names_and_suggests(tmp_path):
    _, _, _, bank = _world(tmp_path, n_rows=50)
    assert parse_edits(bank, ["atom1=2.5"], ["atom3"]) == [("atom1", [1], 2.5), ("atom3", [3], 0.0)]
    with pytest.raises(InputError, match="did you mean: atom1"):
        parse_edits(bank, ["atomm1=1"], [])
    with pytest.raises(InputError, match="NAME=VALUE"):
        parse_edits(bank, ["atom1"], [])
    with pytest.raises(InputError, match="not a number"):
        parse_edits(bank, ["atom1=lots"], [])


def test_setting_a_concept_the_gallery_never_shows_is_refused(tmp_path):
    """Without a row where the concept is on there is no typical code to scale: --set is
    refused (removing it needs none, and the plain call keeps its documented fallback)."""
    sae, store, codes, _ = _world(tmp_path)
    with torch.no_grad():
        sae.b_enc[3] = -0.01  # exactly off without atom 3 (float32 leaves ~1e-8 otherwise)
    never = store.read()[codes[:, 3] == 0]
    gallery = write_store(tmp_path / "no3", never)
    with pytest.raises(InputError, match="active on no gallery row"):
        typical_strength(sae, gallery, [3], edit="--set c3=2")
    np.testing.assert_array_equal(typical_strength(sae, gallery, [3]), [1.0])


def test_a_concept_edited_twice_is_refused(tmp_path):
    _, _, _, bank = _world(tmp_path)
    name = bank.concepts[0].name
    with pytest.raises(InputError, match="edit each concept once"):
        parse_edits(bank, [f"{name}=2"], [name])
