"""mmvtx's registries: children of mmengine's roots, so that ``type='mmvtx.X'`` resolves from a
config whose ``default_scope`` is ``mmdet`` or ``mmseg``. Importing :mod:`mmvtx` fills them."""
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import Registry
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmvtx', locations=['mmvtx.models'])
DATASETS = Registry('dataset', parent=MMENGINE_DATASETS, scope='mmvtx',
                    locations=['mmvtx.datasets'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope='mmvtx', locations=['mmvtx.engine'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry('optimizer wrapper constructor',
                                      parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope='mmvtx',
                                      locations=['mmvtx.engine'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope='mmvtx',
                      locations=['mmvtx.datasets'])
