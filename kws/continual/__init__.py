"""Learning on the device after training: CWR* on the exit heads (``cwr``), the 1-bit latent
replay memory (``replay``, ``memory``), per-word operating points, a threshold and a minimum
exit for each enrolled word (``operating_point``), and the few-shot column rules beside the
many-shot ones: imprinting, weight aligning, BiC, the rule switch (``fewshot``).

numpy only: the Pi package runs all of it without TensorFlow ("where does enrolment learn?" --
here; ``deploy.enroll`` applies it to a bundle).
"""
