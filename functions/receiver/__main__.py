from common.runtime import serve
from functions.receiver.app import app

serve(app)
