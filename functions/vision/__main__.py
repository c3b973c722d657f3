from common.runtime import serve
from functions.vision.app import app

serve(app)
