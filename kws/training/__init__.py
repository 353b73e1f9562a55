"""Training an early-exit BNN: ``kws train``'s options (``config``), the loop (``train``),
Bop and its schedules (``optim``), Keras callbacks (``callbacks``), ``tf.distribute``
placement (``distribute``), distillation targets from a teacher (``teacher``) and the run
directory later steps read (``run``).

Importing the package does not import TensorFlow; its modules that need it load it themselves.
"""
