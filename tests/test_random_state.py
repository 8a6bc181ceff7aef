import pytest
from custom.data.pose import RandHeadPosed
from custom.training.random_state import RandomState
from monai.transforms import Compose


def test_random_state_refuses_a_checkpoint_of_other_transforms():
    saved = RandomState(Compose([RandHeadPosed(keys="ct")])).state_dict()
    with pytest.raises(ValueError, match="transforms changed"):
        RandomState(Compose([])).load_state_dict(saved)
