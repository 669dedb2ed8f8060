from setuptools import find_packages, setup


def version():
    scope = {}
    with open('mmvtx/version.py') as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='mmvtx',
    version=version(),
    description='ViT, Swin Transformer and CvT as multi-scale backbones for mmdetection 3.x and '
                'mmsegmentation 1.x',
    long_description=open('README.md').read() if __import__('os').path.exists('README.md') else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(include=['mmvtx', 'mmvtx.*']),
    python_requires='>=3.10',
    install_requires=['torch>=2.1', 'mmengine==0.10.7', 'mmcv>=2.0.0rc4,<2.2.0', 'mmdet==3.3.0',
                      'mmsegmentation==1.2.2', 'safetensors'],
    # what requirements/tests.txt installs for `make test` (hypothesis: test_arguments.py)
    extras_require={'tests': ['pytest', 'pytest-xdist', 'transformers', 'hypothesis']},
    zip_safe=False,
)
