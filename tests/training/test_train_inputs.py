import torch

from ramir.training.config import MaskSection, TrainSection
from ramir.training.inputs import MaskedInput, WholeInput, make_input_maker


def test_whole_input_passes_lq_through():
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    inp, target, mask = make_input_maker(TrainSection(input="whole"))(lq, gt, 1)
    assert inp is lq and target is gt and mask is None
    assert isinstance(make_input_maker(TrainSection()), WholeInput)


def test_shared_masks_are_a_function_of_seed_and_iteration():
    lq, gt = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    maker = make_input_maker(TrainSection(input="masked", seed=3))
    inp, target, m1 = maker(lq, gt, 7)
    assert inp is lq and target is gt
    assert m1.shape == (1, 8, 8) and m1.sum() == 32  # ceil(0.5 * 64)
    assert torch.equal(m1, maker(lq[:2], gt[:2], 7)[2])  # any batch size: the same mask
    assert not torch.equal(m1, maker(lq, gt, 8)[2])
    assert not torch.equal(m1, make_input_maker(TrainSection(input="masked", seed=4))(lq, gt, 7)[2])


def test_per_sample_masks_follow_the_dataset_index_and_patch_size():
    m = MaskSection(ratio=0.25, patch_size=4, shared=False)
    maker = make_input_maker(TrainSection(input="masked", mask=m))
    lq = torch.rand(3, 3, 16, 16)
    _, _, mask = maker(lq, lq, 5, torch.tensor([10, 11, 12]))
    assert mask.shape == (3, 16, 16)
    assert torch.all(mask.sum(dim=(1, 2)) == 4 * 16)  # ceil(0.25 * 16 cells) of 4x4 pixels
    _, _, again = maker(lq[:1], lq[:1], 5, torch.tensor([11]))
    assert torch.equal(again[0], mask[1])  # keyed by index, not position


def test_masked_gt_ablation_feeds_the_clean_image():
    lq, gt = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)
    maker = make_input_maker(TrainSection(input="masked_gt"))
    assert isinstance(maker, MaskedInput)
    inp, target, mask = maker(lq, gt, 1)
    assert inp is gt and target is gt and mask is not None
