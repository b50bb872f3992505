"""videodiff: autoregressive video diffusion with diffusion forcing, on procedural physics videos.

    videodiff.data      balls under gravity, their states per frame, matched impossible twins
    videodiff.dit       the video DiT: imagediff's DiT over (frame, row, column) with 3-D RoPE and one
                        noise level per frame
    videodiff.training  diffusion forcing: how noise levels are drawn per frame
    videodiff.sampling  scheduling matrices, one window, history guidance, sliding-window rollouts
    videodiff.metrics   balls tracked by colour and compared with the true physics
    videodiff.evaluation  rollouts of held-out videos scored, one guidance or a table of them
    videodiff.pipeline  the per-frame VAE (imagediff's), training and rolling out end to end

Everything diffusion-specific (schedule, objective, DDIM step, guidance's combination, training loop)
is toydiff's; the VAE and the transformer blocks are imagediff's.
"""
