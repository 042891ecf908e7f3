"""Unit tests of hindsight_data.losses (skipped where torch is not installed: CI has no torch;
scripts/test-trainers.sh runs them). Values are checked against brute-force definitions written
here from the formulas, on small random distributions."""

import unittest

try:
    import torch
except ImportError:  # CI's torch-free environment
    torch = None


def _batch(logits_t, k, mask):
    """A batch whose stored teacher signal comes from full teacher logits [B, L, V]."""
    lp = torch.log_softmax(logits_t, -1)
    top = lp.topk(k, -1)
    tail = torch.log1p(-top.values.exp().sum(-1).clamp(max=1 - 1e-7))
    return {
        "teacher_topk_ids": top.indices,
        "teacher_topk_logprobs": top.values,
        "teacher_tail_logmass": tail,
        "distill_mask": mask,
        "response_ids": torch.zeros(mask.shape, dtype=torch.long),
        "teacher_logprobs": lp[..., 0],
        "advantages": torch.zeros(mask.shape),
    }


@unittest.skipUnless(torch, "torch not installed")
class Losses(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.v = 12
        self.s = torch.randn(2, 3, self.v)
        self.t = torch.randn(2, 3, self.v)
        self.mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])

    def test_forward_kl_with_every_token_is_the_exact_kl(self):
        from hindsight_data.losses import forward_kl

        b = _batch(self.t, self.v - 1, self.mask)  # top-(V-1) + tail = the whole vocabulary
        p, q = torch.log_softmax(self.t, -1), torch.log_softmax(self.s, -1)
        exact = (p.exp() * (p - q)).sum(-1)
        got = forward_kl(self.s, b, reduction="none")
        torch.testing.assert_close(got, exact * self.mask, atol=1e-5, rtol=0)
        self.assertAlmostEqual(forward_kl(self.s, b).item(), ((exact * self.mask).sum() / 3).item(), places=5)
        seq = ((exact * self.mask).sum(-1) / self.mask.sum(-1)).mean()
        self.assertAlmostEqual(forward_kl(self.s, b, reduction="sequence_mean").item(), seq.item(), places=5)

    def test_renormalised_temperature_is_the_tempered_topk(self):
        from hindsight_data.losses import forward_kl

        k, tau = 4, 0.7
        b = _batch(self.t, k, self.mask)
        ids = b["teacher_topk_ids"]
        pt = torch.log_softmax((self.t / tau).gather(-1, ids), -1)  # teacher at tau, renormalised
        ps = torch.log_softmax((self.s / tau).gather(-1, ids), -1)
        want = (pt.exp() * (pt - ps)).sum(-1) * self.mask
        got = forward_kl(self.s, b, tail=False, temperature=tau, reduction="none")
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        with self.assertRaisesRegex(ValueError, "not recoverable"):
            forward_kl(self.s, b, tail=True, temperature=tau)

    def test_the_first_ids_of_a_wider_top_k_are_the_narrower_top_k(self):
        from hindsight_data.losses import topk_divergence

        wide, narrow = _batch(self.t, 6, self.mask), _batch(self.t, 3, self.mask)
        for alpha in (0.0, 0.5, 1.0):
            for tail in (True, False):
                got = topk_divergence(self.s, wide, "teacher", alpha, tail, reduction="none", topk=3)
                want = topk_divergence(self.s, narrow, "teacher", alpha, tail, reduction="none")
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
        with self.assertRaisesRegex(ValueError, "stores 6 ids"):
            topk_divergence(self.s, wide, topk=7)

    def test_masked_positions_never_poison_the_loss(self):
        from hindsight_data.losses import forward_kl

        b = _batch(self.t, 4, self.mask)
        s = self.s.clone()
        s[1, 2, :] = float("-inf")  # a masked position with -inf logits (padding)
        loss = forward_kl(s, b)
        self.assertTrue(torch.isfinite(loss))
        s.requires_grad_(True)
        forward_kl(s, b).backward()
        self.assertTrue(torch.isfinite(s.grad[self.mask > 0]).all())

    def test_advantage_loss_live_is_reinforce_on_the_reverse_kl(self):
        from hindsight_data.losses import advantage_loss

        b = _batch(self.t, 4, self.mask)
        s = self.s.clone().requires_grad_(True)
        loss = advantage_loss(s, b, advantages="live", reduction="sum")
        ls = torch.log_softmax(self.s, -1)[..., 0]
        want = ((ls - b["teacher_logprobs"]) * ls * self.mask).sum()
        self.assertAlmostEqual(loss.item(), want.item(), places=5)
        with self.assertRaises(ValueError):
            advantage_loss(self.s, b, advantages="live", temperature=2.0)


if __name__ == "__main__":
    unittest.main()
