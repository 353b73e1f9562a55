"""From clips to training batches: the waveform and log-mel caches (``cache``), augmentation
in numpy (``augment``) and as batched TensorFlow ops (``augment_tf``), the ``tf.data``
pipelines (``pipeline``) and on-disk TFRecord waveform shards for corpora larger than memory
(``shards``).

"Where is a batch made?" -- here. Importing the package does not import TensorFlow.
"""
