# 新机器上的两条命令：make run（装好并启动整个服务）与 make test（装好并跑测试）。
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed

.PHONY: run test lint check deps setup config manage bench clean

# mysqlclient 需要编译：缺头文件时（Debian/Ubuntu 且为 root）自动安装
deps:
	@if ! pkg-config --exists mysqlclient 2>/dev/null && ! pkg-config --exists libmariadb 2>/dev/null; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "安装 mysqlclient 的编译依赖 (libmariadb-dev pkg-config gettext)…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libmariadb-dev pkg-config gettext >/dev/null; \
	  else \
	    echo "请先安装 MySQL 客户端开发包：sudo apt-get install libmariadb-dev pkg-config（macOS: brew install mysql-client pkg-config）"; exit 1; \
	  fi; \
	fi

$(STAMP): requirements/base.txt requirements/prod.txt requirements/dev.txt
	@$(MAKE) --no-print-directory deps
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/dev.txt
	touch $(STAMP)

setup: $(STAMP)

# 没有配置文件时从示例复制一份，方便第一次体验
config:
	@test -f config/users.json || cp config/users.example.json config/users.json
	@test -f config/app.json || cp config/app.example.json config/app.json

# 四个进程由 honcho 启动（bin/run-all：给 worker 30 秒做完手上的任务再停）；Ctrl-C 一次即全部干净地停止
run: setup config
	$(PY) manage.py migrate --noinput
	$(PY) manage.py load_config
	$(PY) manage.py bootstrap_admin
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) bin/run-all

# 任意 manage.py 命令，用项目的 venv：make manage ARGS="load_config --check"
manage: setup
	$(PY) manage.py $(ARGS)

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

# 以生产式设置做部署检查；没给的密钥/地址用一次性的示例值
check: setup
	DJANGO_PRODUCTION=1 DJANGO_DEBUG=0 \
	DJANGO_SECRET_KEY="$${DJANGO_SECRET_KEY:-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')}" \
	PUBLIC_BASE_URL="$${PUBLIC_BASE_URL:-https://approval.example.com}" \
	DJANGO_ALLOWED_HOSTS="$${DJANGO_ALLOWED_HOSTS:-approval.example.com}" \
	$(PY) manage.py check --deploy --fail-level WARNING

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
