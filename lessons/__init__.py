"""The lessons: ``# %%`` cell scripts to run in order (``python lessons/01_forward_process.py``) or to
open as notebooks, and ``lessons.exercises``, a file with blanks per lesson and its checker.

    01_forward_process.py     noise schedules and the forward process q(x_t | x_0)
    02_training_ddpm.py       training the denoiser on the spiral; DDPM sampling
    03_ddim_and_inversion.py  DDIM: fewer steps from the same model; η, spacing; DDIM inversion
    04_guidance.py            classifier-free guidance against classifier guidance

See lessons/README.md for run times and for quick mode (LESSON_QUICK=1).
"""
