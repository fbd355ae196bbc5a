from . import main

main(prog_name="img2img")
